/* The event stream of the selected local job: fetch and a small SSE parser, since
   EventSource cannot send the x-api-key header. Reconnects after 1 s with Last-Event-ID, so
   nothing is missed; a stream that will not come back hands the view over to polling. */
import { ApiError, authHeaders, errorMessage, waitForKey } from "./api.js";
import { ensureSize, setStatus } from "./chunks.js";
import { notify, notifyError } from "./notice.js";
import { scheduleDraw } from "./redraw.js";
import { app } from "./state.js";
import { isAbort, sleep } from "./util.js";

const RECONNECT_MS = 1000;

export async function streamLoop(view) {
  const signal = view.ctrl.signal;
  while (!view.ended && view.live === "sse" && !signal.aborted) {
    try {
      await readStream(view, signal);
    } catch (err) {
      if (isAbort(err)) return;
      if (err instanceof ApiError && err.status < 500) {
        notifyError(err, "event stream (polling instead)");
        view.live = "poll"; // e.g. a 404: the stream will not come back, polls still work
        return;
      }
      notifyError(err, "event stream dropped, reconnecting");
    }
    if (!view.ended) await sleep(RECONNECT_MS, signal).catch(() => null);
  }
}

async function readStream(view, signal) {
  const headers = authHeaders({ accept: "text/event-stream" });
  if (view.lastEventId) headers["Last-Event-ID"] = view.lastEventId;
  const url = `/jobs/${encodeURIComponent(view.id)}/events`;
  const res = await fetch(url, { headers, signal, cache: "no-store" });
  if (res.status === 401) return waitForKey(await errorMessage(res), signal);
  if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
  const feed = sseParser((event) => onStreamEvent(view, event));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    feed(decoder.decode(value, { stream: true }));
  }
}

function sseParser(onEvent) {
  let buffer = "", event = "", data = [], id = null;
  const line = (text) => {
    if (text === "") { // a blank line ends the event
      if (data.length) onEvent({ event: event || "message", data: data.join("\n"), id });
      [event, data, id] = ["", [], null];
      return;
    }
    if (text[0] === ":") return; // a comment (keep-alive ping)
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  };
  return (text) => {
    buffer += text;
    let start = 0;
    for (let i = 0; i < buffer.length; i++) {
      const c = buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      if (c === "\r" && i === buffer.length - 1) break; // maybe half a \r\n: wait for more
      line(buffer.slice(start, i));
      if (c === "\r" && buffer[i + 1] === "\n") i++;
      start = i + 1;
    }
    buffer = buffer.slice(start);
  };
}

function onStreamEvent(view, event) {
  if (app.view !== view) return;
  if (event.id) view.lastEventId = event.id;
  let data;
  try {
    data = JSON.parse(event.data);
  } catch (_) {
    return notify(`event stream: unreadable ${event.event} event`, "error");
  }
  if (event.event === "status") setStatus(view, data);
  else if (event.event === "chunk") applyChunkEvent(view, data);
  else if (event.event === "end") {
    view.ended = true;
    setStatus(view, data);
  } else if (event.event === "error") notify(`event stream: ${data.message}`, "error");
}

function applyChunkEvent(view, ev) {
  const i = ev.chunk_index;
  ensureSize(view, Math.max(ev.total_chunks || 0, i + 1));
  const old = view.chunks[i];
  // Only a change marks the row stale: a replayed event for a loaded chunk costs no read.
  if (!old || old.state !== ev.outcome || old.attempts !== ev.attempts) {
    const base = old || { index: i, continuations: 0, latency_ms: null, spans: [] };
    view.chunks[i] = { ...base, state: ev.outcome, attempts: ev.attempts, error: ev.error };
    view.stale.add(i);
  }
  const st = view.status;
  // Counts as of this settlement: replayed (older) events must not step them back.
  if (st && ev.chunks_succeeded != null &&
      ev.chunks_succeeded + ev.chunks_failed >= st.chunks_succeeded + st.chunks_failed) {
    st.chunks_succeeded = ev.chunks_succeeded;
    st.chunks_failed = ev.chunks_failed;
    if (ev.items_processed != null) st.items_processed = ev.items_processed;
  }
  scheduleDraw({ status: true, map: true });
}
