/* A job's chunk data: a dense array indexed by chunk index, merged from pages of the chunks
   endpoint (and, for the selected local job, from its events). Span times are parsed once
   here, so a redraw of 100,000 chunks does no date parsing. */
import { getJson, jobUrl } from "./api.js";
import { parseTime } from "./format.js";
import { scheduleDraw } from "./redraw.js";
import { TERMINAL } from "./state.js";

const PAGE_SIZE = 1000;

export const isFinal = (state) => state === "succeeded" || state === "failed";

// kind: "view" (the selected job) or "compare": which canvases its reads redraw.
export function newJob(path, id, kind) {
  return { path, id, kind, status: null, chunks: [], created: 0, maxEnd: 0, stale: null };
}

export function ensureSize(job, total) {
  // Filled with null (not holes) so the engine keeps a fast dense array.
  while (job.chunks.length < total) job.chunks.push(null);
}

export function setJobStatus(job, status) {
  job.status = status;
  job.created = parseTime(status.created_at) || job.created;
  ensureSize(job, status.total_chunks);
}

// The selected job's status: its counts and map are redrawn with it.
export function setStatus(view, status) {
  setJobStatus(view, status);
  scheduleDraw({ status: true, map: true });
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

export async function readPage(job, after, state, signal) {
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
export async function readPages(job, signal, { state = null, maxChunks = Infinity, seen = null } = {}) {
  for (let after = -1, chunks = 0; after != null && chunks < maxChunks;) {
    const page = await readPage(job, after, state, signal);
    if (seen) page.chunks.forEach((row) => seen.add(row.index));
    chunks += page.chunks.length;
    after = page.next_after;
  }
}

// True once nothing about the job can change: a cancelled job waits for its running chunks.
export function jobSettled(status) {
  if (!status || !TERMINAL.has(status.status)) return false;
  const accounted = status.chunks_succeeded + status.chunks_failed + status.chunks_cancelled;
  return status.status !== "cancelled" || accounted >= status.total_chunks;
}
