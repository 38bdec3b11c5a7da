/* The browser dashboard served at /ui: lists recent jobs on both paths ("local": FastAPI +
   Inngest, "cloud": the AWS stack behind /cloud), starts and cancels demo jobs, and draws the
   selected job's counts, chunk map and timeline live, plus a local-vs-cloud compare view on
   one time axis. Plain ES2020 with no dependencies (the page must work offline); canvases
   and bounded, incremental reads keep it usable at 100,000 chunks. */
"use strict";

// ---- Constants: one table of colours feeds both the canvases and their legends.
const KEY_STORAGE = "long-jobs-api-key";
const BASES = { local: "", cloud: "/cloud" };
const TERMINAL = new Set(["succeeded", "partial", "failed", "cancelled"]);
const PAGE_SIZE = 1000;
const PAGES_PER_TICK = 5; // bounds a live tick's reads, whatever the job's size
const COMPARE_CHUNKS = 2000; // as the CLI's compare (tools/compare.py TIMELINE_CHUNKS)
const LIST_EVERY_MS = 3000, TICK_MS = 2000, RECONNECT_MS = 1000;
const TL_MIN_GAP_MS = 250; // a timeline pass walks every span: cap it while pages pour in
const MAP_MAX_W = 900, MAP_MAX_H = 240, MIN_CELL = 4, MAX_CELL = 18;
const TL_MAX_ROWS = 400, TL_MAX_H = 400, TL_AXIS_H = 22, TL_LEFT = 48;
const CMP_BAND_H = 150, CMP_GAP = 14;

const CHUNK_COLORS = {
  pending: "#d0d4d9", running: "#2f6feb", succeeded: "#2da44e",
  retried: "#a5b92a", failed: "#d1242f", cancelled: "#4b535c",
};
const SPAN_COLORS = {
  succeeded: "#2da44e", failed: "#d1242f", retried: "#f08c2e",
  continued: "#8250df", lost: "#9198a1", running: "#2f6feb",
};
const MAP_LEGEND = [
  ["pending", "pending"], ["running", "running"], ["succeeded", "succeeded"],
  ["retried", "succeeded after retries"], ["failed", "failed"], ["cancelled", "cancelled"],
];

// ---- Page state: one selected job view, one compare view, the compare picks per path.
const app = {
  config: { api_key_required: false, cloud: { configured: false, reason: "config not loaded" } },
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  keyWaiters: [],
  picks: { local: null, cloud: null },
  view: null,
  compare: null,
};
const $ = (id) => document.getElementById(id);

// ---- Small helpers: time, formatting, cancellable sleep.
const abortError = () => new DOMException("aborted", "AbortError");
const isAbort = (err) => Boolean(err) && err.name === "AbortError";
const isFinal = (state) => state === "succeeded" || state === "failed";
const shortId = (id) => (id.length > 8 ? `${id.slice(0, 8)}…` : id);
const fmtInt = (n) => (n == null ? "—" : Number(n).toLocaleString("en-US"));
const fmtMs = (ms) => (ms == null ? "—" : `${Math.round(ms).toLocaleString("en-US")} ms`);
const fmtSecs = (s) => (s == null ? "—" : `${Number(s).toFixed(1)} s`);
const fmtUsd = (v) => (v == null ? "—" : `$${Number(v).toFixed(4)}`);
const cloudReason = () => app.config.cloud.reason || "no reason given";

function parseTime(iso) {
  // Server times are aware ISO strings; a naive one is taken as UTC rather than local time.
  if (!iso) return null;
  const t = Date.parse(/[zZ]$|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  return Number.isNaN(t) ? null : t;
}

function fmtClock(iso) {
  const t = parseTime(iso);
  return t == null ? "—" : new Date(t).toLocaleTimeString([], { hour12: false });
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(abortError());
    const onAbort = () => { clearTimeout(timer); reject(abortError()); };
    const timer = setTimeout(() => { signal?.removeEventListener("abort", onAbort); resolve(); }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// ---- Notice line: every result and error lands here, so nothing fails silently.
function notify(text, kind = "info") {
  $("notice").textContent = text;
  $("notice").dataset.kind = kind;
}

function notifyError(err, what) {
  if (isAbort(err)) return; // we cancelled it ourselves (job switched): not an error
  notify(what ? `${what}: ${err.message}` : err.message, "error");
}

// ---- API calls: the key on every request; a 401 asks for a key, then the call is retried.
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function authHeaders(extra = {}) {
  return app.key ? { ...extra, "x-api-key": app.key } : { ...extra };
}

async function errorMessage(res) {
  // Errors are {"message": ...}; anything else (a proxy's HTML page) is shown raw.
  const text = await res.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && body.message) return String(body.message);
  } catch (_) { /* not JSON */ }
  return `HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ""}`;
}

async function request(method, url, { body, signal } = {}) {
  for (;;) {
    const headers = authHeaders(body === undefined ? {} : { "content-type": "application/json" });
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const res = await fetch(url, { method, headers, body: payload, signal, cache: "no-store" });
    if (res.status === 401) {
      await waitForKey(await errorMessage(res), signal);
      continue;
    }
    if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
    return { status: res.status, data: await res.json() };
  }
}

const getJson = async (url, signal) => (await request("GET", url, { signal })).data;
const jobUrl = (job) => `${BASES[job.path]}/jobs/${encodeURIComponent(job.id)}`;

// ---- API key form: shown when the server wants a key; saving it releases waiting calls.
function waitForKey(message, signal) {
  const form = $("key-form");
  if (form.hidden) {
    form.hidden = false;
    $("api-key").value = "";
    $("api-key").focus();
  }
  notify(`API key needed: ${message}`, "error");
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(abortError());
    const waiter = { resolve };
    app.keyWaiters.push(waiter);
    signal?.addEventListener("abort", () => {
      app.keyWaiters = app.keyWaiters.filter((w) => w !== waiter);
      reject(abortError());
    }, { once: true });
  });
}

function saveKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return notify("enter an API key first", "error");
  app.key = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key-form").hidden = true;
  notify("API key saved", "ok");
  app.keyWaiters.splice(0).forEach((w) => w.resolve());
}

// ---- Job lists: both paths every 3 s; a failing or unconfigured cloud never blocks local.
async function listLoop() {
  for (;;) {
    await refreshLists();
    await sleep(LIST_EVERY_MS);
  }
}

const refreshLists = () => Promise.all(["local", "cloud"].map(refreshList));

async function refreshList(path) {
  const ul = $(`jobs-${path}`);
  if (path === "cloud" && !app.config.cloud.configured) {
    return ul.replaceChildren(el("li", "reason", `cloud path not configured: ${cloudReason()}`));
  }
  try {
    const jobs = await getJson(`${BASES[path]}/jobs?limit=20`);
    ul.replaceChildren(...(jobs.length ? jobs.map((job) => jobRow(path, job))
      : [el("li", "empty", "no jobs yet")]));
  } catch (err) {
    ul.replaceChildren(el("li", "reason", `${path} jobs unavailable: ${err.message}`));
    if (path === "local") notifyError(err, "local job list");
  }
}

const isSelected = (path, id) => Boolean(app.view) && app.view.path === path && app.view.id === id;

function jobRow(path, job) {
  const row = el("li", "job-row");
  Object.assign(row.dataset, { jobId: job.job_id, status: job.status, path });
  row.title = job.job_id;
  row.classList.toggle("selected", isSelected(path, job.job_id));
  const pick = el("input", "compare-pick");
  Object.assign(pick, { type: "checkbox", title: "compare", checked: app.picks[path] === job.job_id });
  pick.setAttribute("aria-label", `compare ${job.job_id}`);
  pick.addEventListener("click", (e) => e.stopPropagation()); // ticking is not selecting
  pick.addEventListener("change", () => pickForCompare(path, job.job_id, pick.checked));
  const done = job.chunks_succeeded + job.chunks_failed + job.chunks_cancelled;
  row.append(pick, el("span", "id", shortId(job.job_id)), statusBadge(job.status),
    el("span", "count", `${fmtInt(done)}/${fmtInt(job.total_chunks)} chunks`),
    el("span", "when", fmtClock(job.created_at)));
  row.addEventListener("click", () => selectJob(path, job.job_id));
  return row;
}

function statusBadge(status) {
  const badge = el("span", "status", status);
  badge.dataset.status = status;
  return badge;
}

function markSelected() {
  for (const row of document.querySelectorAll(".jobs li[data-job-id]")) {
    row.classList.toggle("selected", isSelected(row.dataset.path, row.dataset.jobId));
  }
}

function pickForCompare(path, id, checked) {
  // One pick per path, like radio buttons that can also be cleared.
  if (checked) app.picks[path] = id;
  else if (app.picks[path] === id) app.picks[path] = null;
  for (const box of document.querySelectorAll(`#jobs-${path} .compare-pick`)) {
    box.checked = box.closest("li").dataset.jobId === app.picks[path];
  }
  if (app.picks.local && app.picks.cloud) openCompare(app.picks.local, app.picks.cloud);
  else closeCompare();
}

// ---- Start form: builds a JobSpec and starts it on one path or both.
function readSpec() {
  const whole = (id, min) => {
    const value = Number($(id).value);
    if (Number.isInteger(value) && value >= min) return value;
    throw new Error(`${id.replace(/-/g, "_")} must be a whole number ≥ ${min}`);
  };
  const spec = {
    total_items: whole("total-items", 1), chunk_size: whole("chunk-size", 1),
    item_delay_ms: whole("item-delay-ms", 0), priority: "normal",
  };
  const fail = parseIndexList($("fail-chunks").value);
  if (fail.length) spec.fail_chunks = fail;
  const flaky = parseFlaky($("flaky-chunks").value);
  if (Object.keys(flaky).length) spec.flaky_chunks = flaky;
  return spec;
}

function parseIndexList(text) {
  return text.split(/[\s,]+/).filter(Boolean).map((part) => {
    if (!/^\d+$/.test(part)) throw new Error(`fail_chunks: "${part}" is not a chunk index`);
    return Number(part);
  });
}

function parseFlaky(text) {
  const flaky = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)\s*:\s*(\d+)$/.exec(part);
    if (!m) throw new Error(`flaky_chunks: "${part}" is not index:failures (e.g. 3:2)`);
    flaky[m[1]] = Number(m[2]);
  }
  return flaky;
}

async function onStart(paths) {
  let spec;
  try {
    spec = readSpec();
  } catch (err) {
    return notify(err.message, "error");
  }
  setStartButtons(false);
  notify(`starting on ${paths.join(" and ")}…`);
  const results = await Promise.all(paths.map((path) => startOne(path, spec)));
  setStartButtons(true);
  notify(results.map((r) => r.text).join(" · "), results.some((r) => !r.id) ? "error" : "ok");
  const started = results.filter((r) => r.id);
  if (paths.length === 2 && started.length === 2) {
    [app.picks.local, app.picks.cloud] = [started[0].id, started[1].id];
    openCompare(app.picks.local, app.picks.cloud);
  }
  if (started.length) selectJob(started[0].path, started[0].id);
  refreshLists(); // show the new rows now, not in 3 s
}

async function startOne(path, spec) {
  if (path === "cloud" && !app.config.cloud.configured) {
    return { path, text: `cloud not started: ${cloudReason()}` };
  }
  try {
    const { status, data } = await request("POST", `${BASES[path]}/jobs`, { body: spec });
    return { path, id: data.job_id, text: `started ${path} job ${shortId(data.job_id)} (${status})` };
  } catch (err) {
    return { path, text: `${path} start failed: ${err.message}` };
  }
}

function setStartButtons(enabled) {
  for (const id of ["start-local", "start-cloud", "start-both"]) $(id).disabled = !enabled;
}

// ---- Cancel: the answer is the job's status, shown at once; a 409 says it already ended.
async function onCancel() {
  const view = app.view;
  if (!view) return;
  $("cancel").disabled = true;
  const what = `cancel ${view.path} job ${shortId(view.id)}`;
  try {
    // No abort signal: the POST may already have landed, so its answer is worth showing.
    const { status, data } = await request("POST", `${jobUrl(view)}/cancel`);
    notify(`${what}: now ${data.status} (${status})`, "ok");
    if (app.view === view) setStatus(view, data);
  } catch (err) {
    notifyError(err, what);
    if (app.view === view) scheduleDraw({ status: true }); // re-enables the button if due
  }
}

// ---- Chunk data: a dense array per job indexed by chunk index, merged from pages and events.
// Span times are parsed once here, so a redraw of 100,000 chunks does no date parsing.
function newJob(path, id, kind) {
  return { path, id, kind, status: null, chunks: [], created: 0, maxEnd: 0, stale: null };
}

function ensureSize(job, total) {
  // Filled with null (not holes) so the engine keeps a fast dense array.
  while (job.chunks.length < total) job.chunks.push(null);
}

function setJobStatus(job, status) {
  job.status = status;
  job.created = parseTime(status.created_at) || job.created;
  ensureSize(job, status.total_chunks);
}

function toChunk(row) {
  const spans = (row.timeline || []).map((s) => ({
    start: parseTime(s.started_at), end: parseTime(s.ended_at), outcome: s.outcome,
  }));
  return {
    index: row.index, state: row.state, attempts: row.attempts, spans,
    continuations: row.continuations || 0, latency_ms: row.latency_ms, error: row.error,
  };
}

function mergeRow(job, row) {
  const old = job.chunks[row.index];
  // A page requested before an event arrived can be older than it: never step a settled
  // chunk back to running unless the row shows a newer attempt.
  if (old && isFinal(old.state) && row.state === "running" && row.attempts <= old.attempts) {
    return false;
  }
  const chunk = (job.chunks[row.index] = toChunk(row));
  for (const s of chunk.spans) job.maxEnd = Math.max(job.maxEnd, s.end || s.start || 0);
  if (job.stale && isFinal(row.state)) job.stale.delete(row.index);
  return true;
}

async function readPage(job, after, state, signal) {
  const query = `after=${after}&limit=${PAGE_SIZE}${state ? `&state=${state}` : ""}`;
  const page = await getJson(`${jobUrl(job)}/chunks?${query}`, signal);
  page.rejected = new Set();
  for (const row of page.chunks) {
    ensureSize(job, row.index + 1);
    if (!mergeRow(job, row)) page.rejected.add(row.index);
  }
  scheduleDraw(job.kind === "view" ? { map: true, timeline: true } : { compare: true });
  return page;
}

// Pages in order from the first, to the last one (or past maxChunks, for the compare).
async function readPages(job, signal, { state = null, maxChunks = Infinity, seen = null } = {}) {
  for (let after = -1, chunks = 0; after != null && chunks < maxChunks;) {
    const page = await readPage(job, after, state, signal);
    if (seen) page.chunks.forEach((row) => seen.add(row.index));
    chunks += page.chunks.length;
    after = page.next_after;
  }
}

// True once nothing about the job can change: a cancelled job waits for its running chunks.
function jobSettled(status) {
  if (!status || !TERMINAL.has(status.status)) return false;
  const accounted = status.chunks_succeeded + status.chunks_failed + status.chunks_cancelled;
  return status.status !== "cancelled" || accounted >= status.total_chunks;
}

// ---- Selected job: first its status, then every chunk page; then live by stream or polls.
function selectJob(path, id) {
  if (isSelected(path, id)) return;
  if (app.view) app.view.ctrl.abort(); // stops the old job's stream, polls and page reads
  const view = Object.assign(newJob(path, id, "view"), {
    ctrl: new AbortController(), stale: new Set(), lastEventId: null, ended: false,
    live: "none", cursor: null, finalPass: false, done: false, settledTicks: 0, layout: null,
    hoverCell: -1,
  });
  app.view = view;
  $("job").hidden = false;
  $("job-title").textContent = `${path} · ${id}`;
  $("map-hover").textContent = "\u00a0";
  markSelected();
  scheduleDraw({ status: true, map: true, timeline: true });
  loadView(view).catch((err) => notifyError(err, `${path} job ${shortId(id)}`));
}

async function loadView(view) {
  const signal = view.ctrl.signal;
  setStatus(view, await getJson(jobUrl(view), signal));
  // A job that had fully ended before this read needs nothing after the full page load.
  const settledAtStart = jobSettled(view.status);
  if (!settledAtStart) view.live = view.path === "local" ? "sse" : "poll";
  if (view.live === "sse") streamLoop(view); // alongside the page load: the map fills live
  // A long first load (100 pages) must not leave the counts frozen: refresh them meanwhile.
  const counts = setInterval(() => getJson(jobUrl(view), signal)
    .then((st) => setStatus(view, st), (err) => notifyError(err, "status")), TICK_MS);
  try {
    await readPages(view, signal); // sequential pages, each drawn as it lands
    view.done = settledAtStart;
  } catch (err) {
    if (isAbort(err)) return;
    // Some pages are missing: polls sweep the unfinished chunks and fill them in.
    notifyError(err, `chunks of ${view.path} job ${shortId(view.id)} (polling to fill in)`);
    Object.assign(view, { live: "poll", done: false, finalPass: false });
  } finally {
    clearInterval(counts);
  }
  await tickLoop(view);
}

function setStatus(view, status) {
  setJobStatus(view, status);
  scheduleDraw({ status: true, map: true });
}

async function tickLoop(view) {
  const signal = view.ctrl.signal;
  while (!view.done) {
    await sleep(TICK_MS, signal);
    try {
      await (view.live === "sse" ? streamTick(view, signal) : pollTick(view, signal));
    } catch (err) {
      if (isAbort(err)) return;
      notifyError(err, `refresh of ${view.path} job ${shortId(view.id)}`);
    }
    scheduleDraw({ status: true, map: true, timeline: true }); // running bars grow with time
  }
}

// Local with a stream: the events carry states; ticks fetch the timelines they lack.
async function streamTick(view, signal) {
  setStatus(view, await getJson(jobUrl(view), signal)); // one row: keeps latency/retries current
  await refreshRunning(view, signal);
  await refreshStale(view, signal);
  // Once more after `end`, and until every settled chunk's timeline has been re-read.
  if (view.ended && view.stale.size === 0) view.done = true;
  // Ended, but the stream never said so (it keeps failing): finish by polling, whose final
  // pass re-reads every chunk not known to be final.
  if (!view.ended && jobSettled(view.status) && ++view.settledTicks >= 3) {
    view.ended = true;
    view.live = "poll";
  }
}

// Cloud (or local whose stream failed): sweep the pages holding unfinished chunks, lowest
// first, 5 a tick, skipping runs of finished ones; a pass resumes next tick, then wraps.
async function pollTick(view, signal) {
  setStatus(view, await getJson(jobUrl(view), signal));
  if (jobSettled(view.status) && !view.finalPass) {
    view.finalPass = true; // one full pass begun after the end: then the picture is final
    view.cursor = null;
  }
  if (view.cursor === null) view.cursor = -1;
  for (let pages = 0; pages < PAGES_PER_TICK && view.cursor !== null; pages++) {
    const next = lowestUnsettled(view, view.cursor + 1);
    const page = next < view.status.total_chunks ? await readPage(view, next - 1, null, signal) : null;
    view.cursor = page ? page.next_after : null; // null: the pass is complete
  }
  if (view.cursor === null) view.done = view.finalPass;
  await refreshRunning(view, signal);
}

function lowestUnsettled(view, from) {
  // In a cancelled job a chunk that never began never will: it counts as final.
  const neverBegunFinal = view.status.status === "cancelled";
  for (let i = from; i < view.status.total_chunks; i++) {
    const chunk = view.chunks[i];
    if (chunk ? !isFinal(chunk.state) : !neverBegunFinal) return i;
  }
  return view.status.total_chunks;
}

async function refreshRunning(view, signal) {
  const seen = new Set();
  await readPages(view, signal, { state: "running", seen });
  if (view.live !== "sse") return; // the poll's sweep re-reads them anyway
  // Chunks we held as running that no longer are: settled or lost; re-read their rows.
  view.chunks.forEach((chunk, i) => {
    if (chunk && chunk.state === "running" && !seen.has(i)) view.stale.add(i);
  });
}

async function refreshStale(view, signal) {
  let from = 0;
  for (let pages = 0; pages < PAGES_PER_TICK && view.stale.size; pages++) {
    let first = Infinity;
    for (const i of view.stale) if (i >= from && i < first) first = i;
    if (first === Infinity) break;
    const page = await readPage(view, first - 1, null, signal);
    const end = page.next_after == null ? Infinity : page.next_after;
    for (const i of Array.from(view.stale)) {
      // A rejected row was older than the event: it stays stale for the next tick.
      if (i >= first && i <= end && !page.rejected.has(i)) view.stale.delete(i);
    }
    from = end + 1;
  }
}

// ---- Event stream (local only): fetch + a small SSE parser, since EventSource cannot send
// the x-api-key header. Reconnects after 1 s with Last-Event-ID, so nothing is missed.
async function streamLoop(view) {
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

// ---- Redraws: coalesced to one per animation frame, however many events arrive.
const dirty = { status: false, map: false, timeline: false, compare: false };
let frameAsked = false, lastTimelineAt = 0, timelineTimer = 0;

function scheduleDraw(parts) {
  for (const key of Object.keys(parts)) if (parts[key]) dirty[key] = true;
  if (frameAsked) return;
  frameAsked = true;
  requestAnimationFrame(drawFrame);
}

function drawFrame() {
  frameAsked = false;
  const parts = { ...dirty };
  Object.keys(dirty).forEach((k) => { dirty[k] = false; });
  const view = app.view;
  try {
    if (view && parts.status) renderStatus(view);
    if (view && parts.map) drawMap(view);
    if (view && parts.timeline) drawTimelineSoon(view);
    if (app.compare && parts.compare) drawCompare(app.compare);
  } catch (err) {
    notify(`drawing failed: ${err.message}`, "error"); // a bug shows, never hides
  }
}

function drawTimelineSoon(view) {
  // A pass walks every span (~40 ms at 100,000 chunks): the bigger the job, the rarer, so
  // redraws take at most a few percent of the page's time while pages pour in.
  const gap = Math.max(TL_MIN_GAP_MS, view.chunks.length / 50);
  const wait = lastTimelineAt + gap - performance.now();
  if (wait <= 0) {
    lastTimelineAt = performance.now();
    return drawTimeline(view);
  }
  if (timelineTimer) return; // a later draw is already due
  timelineTimer = setTimeout(() => { timelineTimer = 0; scheduleDraw({ timeline: true }); }, wait);
}

function fitCanvas(canvas, cssW, cssH) {
  // Backing store in device pixels, drawing in CSS pixels: crisp on high-DPI screens.
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(cssW * dpr)), h = Math.max(1, Math.round(cssH * dpr));
  if (canvas.width !== w) canvas.width = w; // assigning clears and reallocates: only on change
  if (canvas.height !== h) canvas.height = h;
  Object.assign(canvas.style, { width: `${cssW}px`, height: `${cssH}px` });
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  return ctx;
}

const boxWidth = (canvas, max) => Math.min(max, canvas.parentElement.clientWidth || max);

// ---- Counts panel of the selected job.
function renderStatus(view) {
  const st = view.status;
  Object.assign($("job").dataset, { jobId: view.id, path: view.path, status: st ? st.status : "" });
  $("cancel").disabled = !st || TERMINAL.has(st.status);
  const lat = (st && st.chunk_latency_ms) || {};
  const texts = !st ? {} : {
    "job-chunks": `${fmtInt(st.chunks_succeeded)} / ${fmtInt(st.chunks_failed)} / ` +
      `${fmtInt(st.chunks_cancelled)} / ${fmtInt(st.total_chunks)}`,
    "job-items": `${fmtInt(st.items_processed)} of ${fmtInt(st.total_items)}`,
    "job-attempts": `${fmtInt(st.attempts)} / ${fmtInt(st.retries)}` +
      (st.chunks_resent ? ` (${fmtInt(st.chunks_resent)} resent)` : ""),
    "job-latency": `${fmtMs(lat.p50)} / ${fmtMs(lat.p95)} / ${fmtMs(lat.max)}`,
    "job-duration": durationText(st),
  };
  for (const id of ["job-chunks", "job-items", "job-attempts", "job-latency", "job-duration"]) {
    $(id).textContent = texts[id] || "…";
  }
  $("job-status").replaceChildren(st ? statusBadge(st.status) : "…");
  renderUsage(st && st.usage);
  $("job-error").hidden = !(st && st.error);
  $("job-error").textContent = st && st.error ? `job error: ${st.error}` : "";
  renderFailed(st);
}

function durationText(st) {
  if (st.duration_s != null) return fmtSecs(st.duration_s);
  const started = parseTime(st.started_at);
  if (!started || TERMINAL.has(st.status)) return "—";
  return `${fmtSecs((Date.now() - started) / 1000)} so far`;
}

function renderUsage(usage) {
  $("job-usage-row").hidden = !usage;
  if (!usage) return;
  const tokens = (usage.prompt_tokens || 0) + (usage.completion_tokens || 0);
  $("job-usage").textContent = `${fmtInt(tokens)} (${fmtInt(usage.prompt_tokens)} in, ` +
    `${fmtInt(usage.completion_tokens)} out) · ${fmtUsd(usage.est_cost_usd)}` +
    (usage.items_failed ? ` · ${fmtInt(usage.items_failed)} items failed` : "");
}

function renderFailed(st) {
  const failed = (st && st.failed_chunks) || [];
  const shown = failed.slice(0, 5).map((f) =>
    el("li", null, `chunk ${f.index} (${f.attempts} attempts): ${f.error}`));
  const more = failed.length ? st.chunks_failed - shown.length : 0;
  if (more > 0) shown.push(el("li", null, `… and ${fmtInt(more)} more failed`));
  $("job-failed").hidden = !shown.length;
  $("job-failed").replaceChildren(...shown);
}

// ---- Chunk map: one fillRect per cell; past what fits at 4 px a cell covers a range.
function mapLayout(total, width) {
  for (let cell = MAX_CELL; cell >= MIN_CELL; cell--) {
    const cols = Math.floor(width / cell);
    if (cols * Math.floor(MAP_MAX_H / cell) >= total) {
      return { cell, cols, per: 1, cells: total, rows: Math.max(1, Math.ceil(total / cols)) };
    }
  }
  const cols = Math.floor(width / MIN_CELL);
  const per = Math.ceil(total / (cols * Math.floor(MAP_MAX_H / MIN_CELL)));
  const cells = Math.ceil(total / per);
  return { cell: MIN_CELL, cols, per, cells, rows: Math.ceil(cells / cols) };
}

const neverBegunState = (job) => (job.status && job.status.status === "cancelled" ? "cancelled" : "pending");

function tallyRange(job, from, to, tally) {
  // Reuses one object: this runs once per cell per frame.
  tally.succeeded = tally.retried = tally.failed = tally.running = 0;
  tally.pending = tally.cancelled = 0;
  const never = neverBegunState(job);
  for (let i = from; i < to; i++) {
    const chunk = job.chunks[i];
    if (!chunk) tally[never] += 1;
    else {
      tally[chunk.state] += 1;
      if (chunk.state === "succeeded" && chunk.attempts > 1) tally.retried += 1;
    }
  }
  return tally;
}

function cellColor(t, n) {
  if (t.failed) return CHUNK_COLORS.failed; // the worst state in the range wins
  if (t.running) return CHUNK_COLORS.running;
  if (t.succeeded === n) return t.retried ? CHUNK_COLORS.retried : CHUNK_COLORS.succeeded;
  if (t.succeeded) return `hsl(136, 50%, ${Math.round(88 - 40 * (t.succeeded / n))}%)`;
  return t.cancelled ? CHUNK_COLORS.cancelled : CHUNK_COLORS.pending;
}

function drawMap(view) {
  const canvas = $("chunk-map");
  const total = view.status ? view.status.total_chunks : 0;
  const layout = (view.layout = mapLayout(total, boxWidth(canvas, MAP_MAX_W)));
  const { cell, cols, per, cells } = layout;
  const ctx = fitCanvas(canvas, cols * cell, layout.rows * cell);
  const gap = cell >= 6 ? 1 : 0, tally = {};
  let settled = 0, running = 0, fill = "";
  for (let k = 0; k < cells; k++) {
    const from = k * per, to = Math.min(total, from + per);
    tallyRange(view, from, to, tally);
    settled += tally.succeeded + tally.failed;
    running += tally.running;
    const color = cellColor(tally, to - from);
    if (color !== fill) ctx.fillStyle = fill = color; // fillStyle parsing is the slow part
    ctx.fillRect((k % cols) * cell, Math.floor(k / cols) * cell, cell - gap, cell - gap);
  }
  Object.assign(canvas.dataset, { total, settled, running });
  if (view.hoverCell >= 0) showHover(view, view.hoverCell); // keep the hover line current
}

function onMapHover(e) {
  const view = app.view;
  if (!view || !view.layout) return;
  const { cell, cols, cells } = view.layout;
  const col = Math.floor(e.offsetX / cell), k = Math.floor(e.offsetY / cell) * cols + col;
  view.hoverCell = col < cols && k < cells ? k : -1;
  showHover(view, view.hoverCell);
}

function showHover(view, k) {
  const out = $("map-hover");
  if (k < 0 || !view.layout) return void (out.textContent = "\u00a0");
  const per = view.layout.per, from = k * per;
  const to = Math.min(view.status ? view.status.total_chunks : 0, from + per);
  out.textContent = per === 1 ? describeChunk(view, from) : describeRange(view, from, to);
}

function describeChunk(view, i) {
  const chunk = view.chunks[i];
  if (!chunk) return `chunk ${i}: ${neverBegunState(view)} (not begun)`;
  const parts = [`chunk ${i}: ${chunk.state}`, `${chunk.attempts} attempt(s)`];
  if (chunk.attempts > 1) parts.push(`${chunk.attempts - 1} retried`);
  if (chunk.continuations) parts.push(`${chunk.continuations} continuation(s)`);
  if (chunk.latency_ms != null) parts.push(fmtMs(chunk.latency_ms));
  if (chunk.error) parts.push(`error: ${chunk.error}`);
  return parts.join(", ");
}

function describeRange(view, from, to) {
  const t = tallyRange(view, from, to, {});
  const parts = ["succeeded", "failed", "running", "pending", "cancelled"]
    .filter((k) => t[k]).map((k) => `${t[k]} ${k}`);
  if (t.retried) parts.push(`${t.retried} succeeded after retries`);
  return `chunks ${from}–${to - 1}: ${parts.join(", ")}`;
}

// ---- Timelines: bars per span against seconds since created_at; shared by the compare.
function bandRows(total, maxRows, maxH) {
  const per = Math.max(1, Math.ceil(total / maxRows));
  const rows = Math.max(1, Math.ceil(total / per));
  return { per, rows, rowH: Math.max(1, Math.min(12, Math.floor(maxH / rows))) };
}

function extentSecs(job) {
  // Running bars reach "now"; a job that has ended stops at its finish (or its last span).
  if (!job.status || !job.created) return 1;
  const finished = parseTime(job.status.finished_at);
  const end = jobSettled(job.status) && finished ? finished : Date.now();
  return Math.max(1, (Math.max(end, job.maxEnd) - job.created) / 1000);
}

function drawSpans(ctx, job, band, scale, limit) {
  const now = Date.now(), t0 = job.created, total = Math.min(job.chunks.length, limit);
  const barH = band.rowH >= 4 ? band.rowH - 1 : band.rowH;
  let drawn = 0, fill = "";
  for (let i = 0; i < total; i++) {
    const spans = job.chunks[i] ? job.chunks[i].spans : [];
    const y = band.y + Math.floor(i / band.per) * band.rowH;
    for (let s = 0; s < spans.length; s++) {
      const span = spans[s];
      if (span.start == null) continue;
      // An unended span runs to now; an unended non-running one (lost) to the next run.
      const next = spans[s + 1] ? spans[s + 1].start : null;
      const end = span.end != null ? span.end : (span.outcome === "running" ? now : next || now);
      const color = SPAN_COLORS[span.outcome] || "#000";
      if (color !== fill) ctx.fillStyle = fill = color;
      const x = band.x + ((span.start - t0) / 1000) * scale;
      ctx.fillRect(x, y, Math.max(1, ((end - span.start) / 1000) * scale), barH);
      drawn += 1;
    }
  }
  return drawn;
}

function drawAxis(ctx, x, bottom, w, secs, scale) {
  // Ticks ~80 px apart at a round number of seconds; faint grid lines go under the bars.
  const raw = secs / Math.max(1, w / 80);
  const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const step = steps.find((s) => s >= raw) || Math.ceil(raw / 3600) * 3600;
  Object.assign(ctx, { font: "11px system-ui, sans-serif", textAlign: "center", textBaseline: "top" });
  for (let k = 0; k * step <= secs + 1e-9; k++) {
    const t = k * step, px = Math.round(x + t * scale) + 0.5;
    ctx.fillStyle = "#e6e9ed";
    ctx.fillRect(px, 0, 1, bottom);
    ctx.fillStyle = "#57606a";
    ctx.fillText(`${step < 1 ? t.toFixed(1) : Math.round(t)}s`, px, bottom + 5);
  }
  ctx.fillStyle = "#9198a1";
  ctx.fillRect(x, bottom, w, 1);
}

function drawTimeline(view) {
  const canvas = $("timeline");
  const total = view.status ? view.status.total_chunks : 0;
  const width = boxWidth(canvas, MAP_MAX_W + 20);
  const band = { ...bandRows(total, TL_MAX_ROWS, TL_MAX_H), x: TL_LEFT, y: 2 };
  const bottom = band.rows * band.rowH + 4, height = bottom + TL_AXIS_H;
  const ctx = fitCanvas(canvas, width, height);
  const plotW = width - TL_LEFT - 12, secs = extentSecs(view), scale = plotW / secs;
  drawAxis(ctx, TL_LEFT, bottom, plotW, secs, scale);
  const drawn = view.status ? drawSpans(ctx, view, band, scale, total) : 0;
  if (total) { // which end of the rows is which chunk
    Object.assign(ctx, { fillStyle: "#57606a", textAlign: "right", textBaseline: "top" });
    ctx.fillText("chunk 0", TL_LEFT - 4, 0);
    ctx.textBaseline = "bottom";
    ctx.fillText(String(total - 1), TL_LEFT - 4, bottom);
  }
  canvas.dataset.spans = String(drawn);
}

// ---- Compare: two jobs (first 2,000 chunks each) on one time axis, with a summary table.
function openCompare(localId, cloudId) {
  const cmp = app.compare;
  if (cmp && cmp.jobs.local.id === localId && cmp.jobs.cloud.id === cloudId) return;
  closeCompare();
  app.compare = {
    jobs: { local: newJob("local", localId, "compare"), cloud: newJob("cloud", cloudId, "compare") },
    ctrl: new AbortController(), ready: false,
  };
  $("compare").hidden = false;
  $("compare-ids").textContent = `local ${shortId(localId)} · cloud ${shortId(cloudId)}`;
  compareLoop(app.compare);
}

function closeCompare() {
  if (app.compare) app.compare.ctrl.abort();
  app.compare = null;
  $("compare").hidden = true;
  $("compare").dataset.ready = "0";
}

function onCompareClose() {
  closeCompare();
  app.picks.local = app.picks.cloud = null;
  document.querySelectorAll(".compare-pick").forEach((box) => { box.checked = false; });
}

async function compareLoop(cmp) {
  const jobs = Object.values(cmp.jobs), signal = cmp.ctrl.signal;
  while (!signal.aborted) {
    try {
      await Promise.all(jobs.map((job) => refreshCompareJob(job, signal)));
    } catch (err) {
      if (isAbort(err)) return;
      notifyError(err, "compare");
    }
    cmp.ready = jobs.every((job) => job.complete); // the next draw sets data-ready
    scheduleDraw({ compare: true });
    if (cmp.ready) return;
    await sleep(TICK_MS, signal).catch(() => null);
  }
}

async function refreshCompareJob(job, signal) {
  if (job.complete) return;
  setJobStatus(job, await getJson(jobUrl(job), signal));
  const settled = jobSettled(job.status); // read before the pages: they are then final
  await readPages(job, signal, { maxChunks: COMPARE_CHUNKS });
  job.complete = settled;
}

const COMPARE_ROWS = [
  ["status", "status", (s) => s.status],
  ["chunks", "chunks ok / failed", (s) => `${fmtInt(s.chunks_succeeded)} / ${fmtInt(s.chunks_failed)}`],
  ["items", "items", (s) => fmtInt(s.items_processed)],
  ["attempts", "attempts", (s) => fmtInt(s.attempts)],
  ["retries", "retries", (s) => fmtInt(s.retries)],
  ["wall", "wall time", (s) => fmtSecs(s.duration_s)],
  ["latency", "latency p50 / p95", (s) =>
    `${fmtMs((s.chunk_latency_ms || {}).p50)} / ${fmtMs((s.chunk_latency_ms || {}).p95)}`],
  ["tokens", "tokens", (s) =>
    (s.usage ? fmtInt((s.usage.prompt_tokens || 0) + (s.usage.completion_tokens || 0)) : "—")],
  ["cost", "est. cost", (s) => (s.usage ? fmtUsd(s.usage.est_cost_usd) : "—")],
];

function renderCompareTable(cmp) {
  const rows = COMPARE_ROWS.map(([key, label, value]) => {
    const tr = el("tr");
    tr.dataset.key = key;
    tr.append(el("th", null, label));
    for (const path of ["local", "cloud"]) {
      const st = cmp.jobs[path].status;
      const td = el("td", null, st ? String(value(st)) : "…");
      td.dataset.path = path;
      tr.append(td);
    }
    return tr;
  });
  $("compare-table").tBodies[0].replaceChildren(...rows);
}

function drawCompare(cmp) {
  renderCompareTable(cmp);
  const canvas = $("compare-timeline"), jobs = [cmp.jobs.local, cmp.jobs.cloud];
  const width = boxWidth(canvas, MAP_MAX_W);
  const bottom = 2 * CMP_BAND_H + CMP_GAP + 4;
  const ctx = fitCanvas(canvas, width, bottom + TL_AXIS_H);
  const secs = Math.max(...jobs.map(extentSecs)); // one scale for both: wall times compare
  const plotW = width - TL_LEFT - 12, scale = plotW / secs;
  const bandY = (n) => 2 + n * (CMP_BAND_H + CMP_GAP);
  ctx.fillStyle = "#f3f5f7"; // band backgrounds first, so the grid lines show on them
  jobs.forEach((_, n) => ctx.fillRect(TL_LEFT, bandY(n), plotW, CMP_BAND_H));
  drawAxis(ctx, TL_LEFT, bottom, plotW, secs, scale);
  let drawn = 0;
  jobs.forEach((job, n) => {
    Object.assign(ctx, { fillStyle: "#1f2328", font: "12px system-ui, sans-serif",
      textAlign: "right", textBaseline: "top" });
    ctx.fillText(job.path, TL_LEFT - 6, bandY(n));
    const total = Math.min(job.chunks.length, COMPARE_CHUNKS);
    const band = { ...bandRows(total, CMP_BAND_H, CMP_BAND_H), x: TL_LEFT, y: bandY(n) };
    if (job.status) drawn += drawSpans(ctx, job, band, scale, COMPARE_CHUNKS);
  });
  canvas.dataset.spans = String(drawn);
  $("compare").dataset.ready = cmp.ready ? "1" : "0";
}

// ---- Legends and wiring; then the config decides whether a key or the cloud list is needed.
function fillLegends() {
  const item = (color, label) => {
    const swatch = el("i");
    swatch.style.background = color;
    const li = el("li");
    li.append(swatch, label);
    return li;
  };
  const mapItems = () => [...MAP_LEGEND.map(([k, label]) => item(CHUNK_COLORS[k], label)),
    item("hsl(136, 50%, 72%)", "range partly done (lighter = less)")];
  const spanItems = () => Object.entries(SPAN_COLORS).map(([k, c]) => item(c, k));
  for (const ul of document.querySelectorAll(".legend")) {
    ul.replaceChildren(...(ul.dataset.for === "map" ? mapItems() : spanItems()));
  }
}

function wire() {
  $("key-form").addEventListener("submit", saveKey);
  $("start-form").addEventListener("submit", (e) => e.preventDefault());
  $("start-local").addEventListener("click", () => onStart(["local"]));
  $("start-cloud").addEventListener("click", () => onStart(["cloud"]));
  $("start-both").addEventListener("click", () => onStart(["local", "cloud"]));
  $("cancel").addEventListener("click", onCancel);
  $("compare-close").addEventListener("click", onCompareClose);
  $("chunk-map").addEventListener("mousemove", onMapHover);
  $("chunk-map").addEventListener("mouseleave", () => {
    if (app.view) app.view.hoverCell = -1;
    $("map-hover").textContent = "\u00a0";
  });
  window.addEventListener("resize", () => scheduleDraw({ map: true, timeline: true, compare: true }));
}

async function loadConfig() {
  try {
    const res = await fetch("/ui/config", { cache: "no-store" });
    if (!res.ok) throw new Error(await errorMessage(res));
    app.config = await res.json();
  } catch (err) {
    // Local still works without it; the cloud side says why it is off.
    app.config.cloud = { configured: false, reason: `dashboard config unavailable: ${err.message}` };
    notify(`could not read /ui/config: ${err.message}`, "error");
  }
  if (!app.config.cloud) app.config.cloud = { configured: false, reason: "not in /ui/config" };
  if (!app.config.cloud.configured) {
    for (const id of ["start-cloud", "start-both"]) $(id).title = `cloud: ${cloudReason()}`;
  }
}

async function boot() {
  fillLegends();
  wire();
  await loadConfig();
  if (app.config.api_key_required && !app.key) await waitForKey("this server requires one");
  listLoop();
}

boot();
