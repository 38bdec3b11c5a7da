/* The selected job's counts panel (status, chunks, items, attempts, latency, duration, usage,
   failed chunks), and the status badge the job lists use too. */
import { fmtInt, fmtMs, fmtSecs, fmtUsd, parseTime } from "./format.js";
import { TERMINAL } from "./state.js";
import { $, el } from "./util.js";

export function statusBadge(status) {
  const badge = el("span", "status", status);
  badge.dataset.status = status;
  return badge;
}

export function renderStatus(view) {
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
  renderBatch(st && st.batch);
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
    (usage.items_failed ? ` · ${fmtInt(usage.items_failed)} items failed` : "") +
    (usage.rate_limited ? ` · ${fmtInt(usage.rate_limited)} × 429` : "") +
    (usage.rate_wait_s ? ` · waited ${fmtSecs(usage.rate_wait_s)} for the rate limit` : "") +
    (usage.realtime_cost_usd != null
      ? ` at the batch price (realtime: ${fmtUsd(usage.realtime_cost_usd)})` : "");
}

function renderBatch(batch) {
  $("job-batch-row").hidden = !batch;
  if (!batch) return;
  $("job-batch").textContent = `${fmtInt(batch.batches)} batches · ` +
    `${fmtInt(batch.requests_done)} of ${fmtInt(batch.requests_submitted)} requests done` +
    (batch.requests_resubmitted ? ` · ${fmtInt(batch.requests_resubmitted)} sent again` : "") +
    (batch.requeued ? ` · ${fmtInt(batch.requeued)} × queue full` : "") +
    ` · ${Math.round(batch.discount * 100)} % off`;
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
