/* The selected job: first its status, then every chunk page; then live, by the event stream
   (local) or by polls (cloud, or a local job whose stream failed), until nothing can change.
   Also its Cancel and Retry buttons. */
import { ApiError, getJson, jobUrl, request } from "./api.js";
import { jobSettled, isFinal, newJob, readPage, readPages, setStatus } from "./chunks.js";
import { shortId } from "./format.js";
import { notify, notifyError } from "./notice.js";
import { scheduleDraw } from "./redraw.js";
import { app, isSelected, TICK_MS } from "./state.js";
import { streamLoop } from "./stream.js";
import { $, isAbort, sleep } from "./util.js";

const PAGES_PER_TICK = 5; // bounds a live tick's reads, whatever the job's size

export function selectJob(path, id) {
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

// The lists are redrawn every 3 s with the selection; this marks it at once.
function markSelected() {
  for (const row of document.querySelectorAll(".jobs li[data-job-id]")) {
    row.classList.toggle("selected", isSelected(row.dataset.path, row.dataset.jobId));
  }
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

// Cancel: the answer is the job's status, shown at once; a 409 says it already ended.
export async function onCancel() {
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

// Retry: the job's failed chunks and items run again; a 409 says why not (it is running, it
// succeeded, or it was retried too often). Accepted, the job is followed afresh, as it runs;
// refused, too: the page showed an ended job, and a 409 can mean it has moved on since (a
// retry from elsewhere), which the page would otherwise never read again.
export async function onRetry() {
  const view = app.view;
  if (!view || view.retrying) return;
  view.retrying = true;
  scheduleDraw({ status: true });
  const what = `retry ${view.path} job ${shortId(view.id)}`;
  try {
    const { status, data } = await request("POST", `${jobUrl(view)}/retry`);
    notify(`${what}: now ${data.status} (${status})`, "ok");
    followAgain(view);
  } catch (err) {
    notifyError(err, what);
    if (err instanceof ApiError && err.status === 409) followAgain(view);
  } finally {
    view.retrying = false;
    if (app.view === view) scheduleDraw({ status: true });
  }
}

// Its live reads stopped with its end: begin them again, from a fresh status.
function followAgain(view) {
  if (app.view !== view) return;
  view.ctrl.abort();
  app.view = null;
  selectJob(view.path, view.id);
}
