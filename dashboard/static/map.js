/* The chunk map of the selected job: one fillRect per cell; past what fits at 4 px a cell
   covers a range of chunks, coloured by the worst state in it. Hovering names the chunk or
   range under the pointer. */
import { boxWidth, fitCanvas, legendItem, MAP_MAX_W } from "./canvas.js";
import { fmtMs } from "./format.js";
import { app } from "./state.js";
import { $ } from "./util.js";

const MAP_MAX_H = 240, MIN_CELL = 4, MAX_CELL = 18;
// One table of colours feeds both the canvas and its legend.
const CHUNK_COLORS = {
  pending: "#d0d4d9", running: "#2f6feb", succeeded: "#2da44e",
  retried: "#a5b92a", failed: "#d1242f", cancelled: "#4b535c",
};
const MAP_LEGEND = [
  ["pending", "pending"], ["running", "running"], ["succeeded", "succeeded"],
  ["retried", "succeeded after retries"], ["failed", "failed"], ["cancelled", "cancelled"],
];

export const mapLegendItems = () => [
  ...MAP_LEGEND.map(([k, label]) => legendItem(CHUNK_COLORS[k], label)),
  legendItem("hsl(136, 50%, 72%)", "range partly done (lighter = less)"),
];

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

export function drawMap(view) {
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

export function onMapHover(e) {
  const view = app.view;
  if (!view || !view.layout) return;
  const { cell, cols, cells } = view.layout;
  const col = Math.floor(e.offsetX / cell), k = Math.floor(e.offsetY / cell) * cols + col;
  view.hoverCell = col < cols && k < cells ? k : -1;
  showHover(view, view.hoverCell);
}

// The first chunk of the cell under the pointer, or -1 (the answers view reads it on a click).
export function chunkAtEvent(e) {
  const view = app.view;
  if (!view || !view.layout) return -1;
  const { cell, cols, cells, per } = view.layout;
  const col = Math.floor(e.offsetX / cell), k = Math.floor(e.offsetY / cell) * cols + col;
  return col < cols && k < cells ? k * per : -1;
}

export function onMapLeave() {
  if (app.view) app.view.hoverCell = -1;
  $("map-hover").textContent = "\u00a0";
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
