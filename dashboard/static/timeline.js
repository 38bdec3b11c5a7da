/* Timelines: a bar per run of a chunk against seconds since the job's created_at. Draws the
   selected job's timeline; its bands, spans and axis also draw the compare view. */
import { boxWidth, fitCanvas, legendItem, MAP_MAX_W } from "./canvas.js";
import { jobSettled } from "./chunks.js";
import { parseTime } from "./format.js";
import { scheduleDraw } from "./redraw.js";
import { $ } from "./util.js";

const TL_MIN_GAP_MS = 250; // a timeline pass walks every span: cap it while pages pour in
const TL_MAX_ROWS = 400, TL_MAX_H = 400;
export const TL_AXIS_H = 22, TL_LEFT = 48;
const SPAN_COLORS = {
  succeeded: "#2da44e", failed: "#d1242f", retried: "#f08c2e",
  continued: "#8250df", lost: "#9198a1", running: "#2f6feb",
};
let lastTimelineAt = 0, timelineTimer = 0;

export const spanLegendItems = () => Object.entries(SPAN_COLORS).map(([k, c]) => legendItem(c, k));

export function bandRows(total, maxRows, maxH) {
  const per = Math.max(1, Math.ceil(total / maxRows));
  const rows = Math.max(1, Math.ceil(total / per));
  return { per, rows, rowH: Math.max(1, Math.min(12, Math.floor(maxH / rows))) };
}

export function extentSecs(job) {
  // Running bars reach "now"; a job that has ended stops at its finish (or its last span).
  if (!job.status || !job.created) return 1;
  const finished = parseTime(job.status.finished_at);
  const end = jobSettled(job.status) && finished ? finished : Date.now();
  return Math.max(1, (Math.max(end, job.maxEnd) - job.created) / 1000);
}

export function drawSpans(ctx, job, band, scale, limit) {
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

export function drawAxis(ctx, x, bottom, w, secs, scale) {
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

export function drawTimelineSoon(view) {
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
