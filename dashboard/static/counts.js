/* The selected job's counts panel (status, chunks, items, attempts, latency, duration, usage,
   its spend against its cap, failed items against its threshold, what stopped it, its retries,
   failed chunks, its files), and the status badge the job lists use too. A field the status
   does not carry (an older server, or a job without a cap) hides its row. */
import { fmtInt, fmtMs, fmtSecs, fmtUsd, parseTime } from "./format.js";
import { notify } from "./notice.js";
import { TERMINAL } from "./state.js";
import { $, el } from "./util.js";

// What a job can be stopped by (`stopped_by`), as a user names it.
const STOPPED_BY = {
  max_cost_usd: "its spend cap (max_cost_usd)",
  max_failed_items: "its failure threshold (max_failed_items)",
};
// What a retry is for: a job that ended with something failed.
const RETRYABLE = new Set(["partial", "failed"]);

export function statusBadge(status) {
  const badge = el("span", "status", status);
  badge.dataset.status = status;
  return badge;
}

export function renderStatus(view) {
  const st = view.status;
  Object.assign($("job").dataset, { jobId: view.id, path: view.path, status: st ? st.status : "" });
  $("cancel").disabled = !st || TERMINAL.has(st.status);
  $("retry").hidden = !st || !RETRYABLE.has(st.status);
  $("retry").disabled = Boolean(view.retrying);
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
  renderLimits(st);
  renderFiles(st);
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

function renderLimits(st) {
  const usage = (st && st.usage) || {};
  const cap = usage.max_cost_usd;
  $("job-spend-row").hidden = cap == null;
  if (cap != null) {
    // spent_usd is the live spend the cap is checked against; est_cost_usd, once it has ended.
    const spent = usage.spent_usd ?? usage.est_cost_usd ?? 0;
    const share = cap > 0 ? spent / cap : 0;
    $("job-spend").textContent = `${fmtUsd(spent)} of ${fmtUsd(cap)} (${Math.round(share * 100)} %) `;
    $("job-spend-bar").value = Math.min(share, 1);
  }
  const threshold = st ? st.max_failed_items : null;
  $("job-threshold-row").hidden = threshold == null;
  if (threshold != null) {
    const failed = st.items_failed ?? usage.items_failed ?? 0;
    $("job-threshold").textContent = `${fmtInt(failed)} of at most ${fmtInt(threshold)}`;
  }
  const stopped = st ? st.stopped_by : null;
  $("job-stopped-row").hidden = !stopped;
  if (stopped) $("job-stopped").textContent = STOPPED_BY[stopped] || stopped;
  const redrives = st ? st.redrives : null;
  $("job-redrives-row").hidden = !redrives;
  if (redrives) $("job-redrives").textContent = `${fmtInt(redrives)} time${redrives === 1 ? "" : "s"}`;
}

// The job's files: a web address as a link; a path or an s3:// URI as text to copy. Rebuilt
// only when they change (the panel is redrawn every tick; a rebuilt button loses its focus).
function renderFiles(st) {
  const files = [["output", st && st.output_uri], ["errors", st && st.errors_uri]]
    .filter(([, uri]) => uri);
  const list = $("job-files"), key = JSON.stringify(files);
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.hidden = !files.length;
  list.replaceChildren(...files.map(([name, uri]) => fileItem(name, uri)));
}

function fileItem(name, uri) {
  const item = el("li");
  item.dataset.file = name;
  item.append(el("span", "file-name", `${name} file: `));
  if (/^https?:\/\//i.test(uri)) {
    const link = el("a", null, uri);
    Object.assign(link, { href: uri, target: "_blank", rel: "noopener" });
    item.append(link);
    return item;
  }
  const copy = el("button", "copy", "Copy");
  copy.type = "button";
  copy.addEventListener("click", () => copyText(uri, `${name} file`));
  item.append(el("code", null, uri), copy);
  return item;
}

async function copyText(text, what) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // No clipboard API (a page over plain http on another host): the old way, by a selection.
    const area = Object.assign(el("textarea"), { value: text });
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) return notify(`could not copy the ${what}: select it and copy it yourself`, "error");
  }
  notify(`copied the ${what}: ${text}`, "ok");
}
