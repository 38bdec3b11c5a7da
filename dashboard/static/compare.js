/* The compare view: a local and a cloud job (first 2,000 chunks each) on one time axis, with
   a summary table; read until both have settled. */
import { getJson, jobUrl } from "./api.js";
import { boxWidth, fitCanvas, MAP_MAX_W } from "./canvas.js";
import { jobSettled, newJob, readPages, setJobStatus } from "./chunks.js";
import { fmtInt, fmtMs, fmtSecs, fmtUsd, shortId } from "./format.js";
import { notifyError } from "./notice.js";
import { scheduleDraw } from "./redraw.js";
import { app, TICK_MS } from "./state.js";
import { bandRows, drawAxis, drawSpans, extentSecs, TL_AXIS_H, TL_LEFT } from "./timeline.js";
import { $, el, isAbort, sleep } from "./util.js";

const COMPARE_CHUNKS = 2000; // as the CLI's compare (tools/compare.py TIMELINE_CHUNKS)
const CMP_BAND_H = 150, CMP_GAP = 14;

export function openCompare(localId, cloudId) {
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

export function closeCompare() {
  if (app.compare) app.compare.ctrl.abort();
  app.compare = null;
  $("compare").hidden = true;
  $("compare").dataset.ready = "0";
}

export function onCompareClose() {
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
  ["limited", "429s", (s) => (s.usage ? fmtInt(s.usage.rate_limited || 0) : "—")],
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

export function drawCompare(cmp) {
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
