"""What brings lost work back, on the local path: a chunk whose run failed for good
(`after_failed_run`, from its failure handler) and the chunks a stalled job lost (`sweep`, from
the sweep's cron function) run again, or are recorded failed: nothing stays `running` for ever.
Blocking I/O; adapters call these through `asyncio.to_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from chunking.settings import get_settings
from chunking.status import ChunkRecord, JobRecord
from chunking.store import JobStore

FailedRunAction = Literal["resend", "settle", "leave"]


def after_failed_run(
    store: JobStore, job_id: str, chunk_index: int, resends: int, failed_at: datetime
) -> FailedRunAction:
    """What to do with a chunk whose run failed for good (at `failed_at`):

    - `resend`: every delivery failed before the chunk began (the store shows no attempt: the
      app was unreachable), its job still runs, and it was resent fewer than CHUNK_MAX_RESENDS
      times: it runs again as a fresh run (counted here, `chunks_resent`). An outage then
      costs time, never a chunk's retries.
    - `leave`: a later run of the chunk (a sweep's, a continuation) began after this one
      failed: the chunk is that run's now, and recording it failed would wrongly end it.
    - `settle`: record the chunk failed with the run's error (a no-op if it had settled).
    """
    job = store.get_job(job_id)
    chunk = store.chunk(job_id, chunk_index)
    latest = chunk.timeline[-1] if chunk is not None and chunk.timeline else None
    if chunk is not None and chunk.state == "running" and latest and latest.started_at > failed_at:
        return "leave"
    began = chunk is not None and chunk.attempts > 0
    if began or job is None or job.state != "running":
        return "settle"
    if resends >= get_settings().chunk_max_resends:
        return "settle"
    store.count_resend(job_id)
    return "resend"


# Stalled jobs one sweep looks at: they are rare (an outage that outlived a run's deliveries
# and its failure handler's), and each is examined a window of chunks at a time.
SWEEP_JOBS = 100


@dataclass(frozen=True)
class LostChunk:
    """A chunk of a stalled job that never began, or whose run was lost: what its adapter sends
    again (`sweep` its sweep's number, for the event's id), or records failed (`give_up`)."""

    job_id: str
    chunk_index: int
    priority: str
    tenant: str
    sweep: int
    give_up: bool


def sweep(store: JobStore, now: datetime) -> list[LostChunk]:
    """Find the chunks that running jobs lost, to be run again: the backstop for a run lost
    with its failure handler (an outage longer than both's deliveries), on any orchestrator.

    A job is stalled when it has shown no life for SWEEP_IDLE_S: no attempt begun, no chunk
    settled. Then its chunks are examined a window (SWEEP_WINDOW) at a time, one per call, in
    passes over the job: each chunk with no row (never began) or still `running` (its run was
    lost) is sent again, once per pass. A pass begins at most once every SWEEP_IDLE_S; past
    CHUNK_MAX_RESENDS passes a lost chunk is recorded failed instead, so a job always ends.
    Cost per call: O(SWEEP_JOBS x SWEEP_WINDOW) rows, whatever the jobs' sizes (never O(all
    chunks)); a job that came back to life is left alone. Blocking I/O."""
    settings = get_settings()
    idle_since = now - timedelta(seconds=settings.sweep_idle_s)
    lost: list[LostChunk] = []
    for job in store.stalled_jobs(idle_since, SWEEP_JOBS):
        active_at = job.liveness.active_at
        if job.state == "running" and active_at is not None and active_at < idle_since:
            lost += _sweep_job(store, job, now, idle_since, settings.sweep_window)
    return lost


def _sweep_job(
    store: JobStore, job: JobRecord, now: datetime, idle_since: datetime, window: int
) -> list[LostChunk]:
    """One window of one stalled job's current pass (beginning a pass if it may)."""
    live = job.liveness
    if live.after is None:  # no pass under way: begin one, unless the last began too recently
        if live.swept_at is not None and live.swept_at > idle_since:
            return []
        passes, after, swept_at = live.passes + 1, -1, now
    else:
        passes, after, swept_at = live.passes, live.after, live.swept_at or now
    rows = store.chunk_page(job.job_id, None, after, window)
    found = {row.index: row for row in rows}
    # The rows read cover the indexes up to the last one (all of them, if the page ran short).
    covered = rows[-1].index if len(rows) == window else job.total_chunks - 1
    indexes: list[int] = []
    index = after + 1
    while index <= covered and len(indexes) < window:
        row = found.get(index)
        if row is None or (row.state == "running" and _began_before(row, idle_since)):
            indexes.append(index)
        index += 1
    examined = index - 1
    give_up = passes > get_settings().chunk_max_resends
    resent = 0 if give_up else len(indexes)
    ended = examined >= job.total_chunks - 1
    if not store.record_sweep(
        job.job_id,
        passes=passes,
        after=None if ended else examined,
        swept_at=swept_at,
        resent=resent,
    ):
        return []  # it ended meanwhile
    spec = job.spec
    return [LostChunk(job.job_id, i, spec.priority, spec.tenant, passes, give_up) for i in indexes]


def _began_before(chunk: ChunkRecord, moment: datetime) -> bool:
    return not chunk.timeline or chunk.timeline[-1].started_at < moment
