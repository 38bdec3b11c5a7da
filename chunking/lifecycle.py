"""A job's life, written once for both APIs and the Inngest functions: submit, adopt, cancel,
finish.

Adapters only translate: `main.py` and `aws/starter` turn what these raise into HTTP answers,
`functions/` into Inngest's retry signals, `aws/worker` into SQS delivery. Blocking I/O: the
local path calls them through `asyncio.to_thread`, and submits with `submit_async`.

- `submit`: the spec is completed from what it points at (`prepare_spec`), the job recorded
  `queued` under its id (new, or the caller's idempotency key), then its first work decided
  here (`FirstWork`: plan it in its first durable unit, or its chunks, planned already, to fan
  out) and handed to the caller's `send`, which only sends it. The same id and spec again is a
  repeat: nothing is sent twice. Another spec under that id is a JobConflictError. If sending
  fails the job is marked failed, so its status says why, and EnqueueError is raised: the
  caller may retry with the same id.
- `adopt`: the job's first durable unit (Inngest's start-job) takes the job that `submit`
  recorded, or records it if the event came from elsewhere.
- `plan`: in the job's first durable unit, its workload counts (and indexes) its items within
  a budget, paused and resumed as often as that takes; then the job starts, once. A job whose
  spec gives its items has nothing to read: the cloud path's `submit` plans it in the request
  (`plan_known_items`), so its chunks go out with it. What cannot run (a bad input line)
  fails the job, with the reason.
- `cancel`: chunks not yet started never run; running ones finish (JobEndedError if it ended).
- `finish`: what a finished job leaves behind, re-run safely on a redelivery.
- `after_failed_run` and `sweep`: a chunk whose run failed for good, or that a stalled job
  lost, runs again or is recorded failed: nothing is left `running` for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Literal

from chunking import metrics, workload
from chunking.one_thread import OneThread
from chunking.prepare import prepare_spec
from chunking.settings import get_settings
from chunking.spec import MAX_CHUNKS, JobSpec, chunk_count, new_job_id
from chunking.status import ChunkRecord, JobPath, JobRecord, JobStatus
from chunking.store import JobEndedError, JobStore
from chunking.workload import PlanError, PlanPaused


class EnqueueError(Exception):
    """The job was recorded but could not be enqueued: it is marked failed; retry the submit."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"{reason}. The job is marked failed; retry with the same job_id.")
        self.job_id = job_id


@dataclass(frozen=True)
class Submission:
    job: JobRecord
    enqueued: bool  # False: the same job_id and spec again, nothing new was sent


@dataclass(frozen=True)
class PlanJob:
    """A job's first work: hand it to its first durable unit (Inngest's start-job, the cloud
    path's plan message), which plans it (never in a request), starts it, fans out its chunks."""

    job: JobRecord
    again: bool  # recorded before, and its start failed: a new send, not a duplicate to drop


@dataclass(frozen=True)
class FanOut:
    """A job's first work when `submit` planned it: its chunks 0 .. total_chunks-1, to send now.
    0 (nothing to send) when planning found it cannot run (it is marked failed, with the
    reason) or it was cancelled meanwhile."""

    job: JobRecord
    total_chunks: int


FirstWork = PlanJob | FanOut


def submit(
    store: JobStore,
    spec: JobSpec,
    path: JobPath,
    send: Callable[[FirstWork], None],
    *,
    plan_known_items: bool = False,
    what: str = "enqueue the job",
) -> Submission:
    """Prepare, record and start a job; raises ValidationError, JobConflictError,
    InputUnavailableError (the input's store did not answer) or EnqueueError.

    `send(work)` sends the job's first work as the adapter's messages, and nothing more. With
    `plan_known_items`, a job whose spec says how many items it has (nothing to read) is planned
    here, before `send`, since a fast worker may settle every chunk before this returns: its
    chunks are ready (FanOut). Otherwise, and for a job that counts its input, its first
    durable unit plans it (PlanJob)."""
    job, again = _record_for_submit(store, spec, path)
    if again is None:
        return Submission(job, enqueued=False)  # an idempotent repeat
    try:
        send(_first_work(store, job, again, plan_known_items))
    except Exception as err:
        raise _enqueue_failed(store, job.job_id, what, err) from err
    metrics.job_submitted(path)
    return Submission(job, enqueued=True)


# The submissions' writes: on one thread, those waiting together in one trip (one_thread.py).
SUBMISSIONS = OneThread("submissions")


async def submit_async(
    store: JobStore,
    spec: JobSpec,
    path: JobPath,
    send: Callable[[PlanJob], Awaitable[None]],
    *,
    what: str = "enqueue the job",
) -> Submission:
    """`submit` on an event loop, for an adapter whose first durable unit plans every job (the
    request only records it and sends a PlanJob): the store's writes on the SUBMISSIONS thread,
    `send` awaited on the loop, so a request holds no thread while it sends (and its send can
    share a POST with other requests': functions/client.py's EventBatcher).

    Once begun, a submission runs to its end even if the caller is cancelled: a job recorded is
    sent or marked failed, never left `queued` with nothing sent."""
    return await asyncio.shield(_submit_async(store, spec, path, send, what))


async def _submit_async(
    store: JobStore,
    spec: JobSpec,
    path: JobPath,
    send: Callable[[PlanJob], Awaitable[None]],
    what: str,
) -> Submission:
    record = partial(_record_for_submit, store, spec, path)
    job, again = await SUBMISSIONS.run(record, within=store.batch)
    if again is None:
        return Submission(job, enqueued=False)  # an idempotent repeat
    try:
        await send(PlanJob(job, again))
    except Exception as err:
        raise await SUBMISSIONS.run(partial(_enqueue_failed, store, job.job_id, what, err)) from err
    metrics.job_submitted(path)
    return Submission(job, enqueued=True)


def _record_for_submit(
    store: JobStore, spec: JobSpec, path: JobPath
) -> tuple[JobRecord, bool | None]:
    """Prepare and record the job: (job, `again` for its first work), or (job, None) when it is
    an idempotent repeat with nothing to send. Blocking I/O."""
    job, created = _record(store, prepare_spec(spec, path), path)
    if not created and not store.requeue_job(job.job_id):
        return job, None
    return job, not created


def _first_work(store: JobStore, job: JobRecord, again: bool, plan_known_items: bool) -> FirstWork:
    """What starts the recorded job (see `submit`). Blocking I/O when it plans the job here."""
    if not plan_known_items or workload.of(job.spec).known_items(job.spec) is None:
        return PlanJob(job, again)
    planned = plan(store, job.job_id, None, None)
    return FanOut(job, planned.total_chunks if planned.started else 0)


def _enqueue_failed(store: JobStore, job_id: str, what: str, err: Exception) -> EnqueueError:
    """Mark the job failed, so its status says why: the error for the caller. Blocking I/O."""
    reason = f"could not {what}: {err}"
    store.fail_job(job_id, reason)
    return EnqueueError(job_id, reason)


def adopt(store: JobStore, spec: JobSpec, path: JobPath) -> JobRecord:
    """The job `submit` recorded (or a new one for this spec)."""
    recorded = store.get_job(spec.job_id) if spec.job_id else None
    if recorded is None or recorded.spec.model_dump() != spec.model_dump():
        # Not the spec an API recorded (e.g. an event sent from the Dev Server UI): prepared
        # here. A submitted job was prepared once already.
        spec = prepare_spec(spec, path)
    job, _ = _record(store, spec, path)  # the same id with another spec: JobConflictError
    return job


@dataclass(frozen=True)
class PlanOutcome:
    started: bool  # this call started the job: fan out its `total_chunks` chunks
    total_chunks: int
    resume: dict[str, int] | None = None  # paused to respect the budget: plan again with it
    failed: str | None = None  # the job cannot run, and is marked failed with this reason


def plan(
    store: JobStore, job_id: str, resume: Mapping[str, int] | None, deadline: float | None
) -> PlanOutcome:
    """Count the job's items (by `deadline`, a time.monotonic() value) and start it, once.

    Raises InputUnavailableError (retry later) when what it reads does not answer.
    """
    job = store.get_job(job_id)
    if job is None:
        raise LookupError(f"job {job_id}: no such job in the job store")
    if job.state != "queued":  # started already (a duplicate), cancelled or failed
        return PlanOutcome(started=False, total_chunks=job.total_chunks, failed=job.error)
    try:
        step = workload.of(job.spec).plan(job, resume, deadline)
        if isinstance(step, PlanPaused):
            return PlanOutcome(started=False, total_chunks=0, resume=step.state)
        chunks = chunk_count(step.total_items, job.spec.chunk_size)
        if chunks > MAX_CHUNKS:
            raise PlanError(
                f"{step.total_items} items with chunk_size={job.spec.chunk_size} make {chunks} "
                f"chunks; at most {MAX_CHUNKS} are allowed: raise chunk_size to at least "
                f"{chunk_count(step.total_items, MAX_CHUNKS)}"
            )
    except PlanError as err:
        store.fail_job(job_id, str(err))
        return PlanOutcome(started=False, total_chunks=0, failed=str(err))
    store.set_plan(job_id, step.total_items)
    return PlanOutcome(started=store.start_job(job_id), total_chunks=chunks)


def _record(store: JobStore, spec: JobSpec, path: JobPath) -> tuple[JobRecord, bool]:
    """Record a prepared spec under its id (or a new one): (job, created now)."""
    return store.create_job(spec.job_id or new_job_id(), spec, path)


def cancel(store: JobStore, job_id: str) -> JobStatus | None:
    """Cancel a job, idempotently: its status after, or None if there is no such job.

    Raises JobEndedError if it had ended. Both APIs' cancel endpoints call this (blocking I/O).
    """
    job = store.get_job(job_id)
    if job is None:
        return None
    if store.cancel_job(job_id):
        metrics.job_ended(job.path, "cancelled")
    else:
        current = store.status(job_id)  # re-read: a concurrent cancel may have won
        if current is None or current.status != "cancelled":
            raise JobEndedError(f"job {job_id} has ended ({current.status if current else 'gone'})")
    return store.status(job_id)


def finish(store: JobStore, job_id: str) -> None:
    """The job has ended: let its workload leave its results behind (idempotent). The job's
    finishing unit runs it (its own Inngest function, its own SQS message), with its own
    budget and retries, never inside the last chunk's run."""
    job = store.get_job(job_id)  # fresh: what an earlier finish wrote (output_uri) shows
    if job is not None:
        kind = workload.of(job.spec)
        kind.after_job_finished(store, job)
        if kind.produces_output and job.output_uri is None:  # its status is final only now
            metrics.job_ended_in(store, job_id)


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


def start_failed(store: JobStore, job_id: str, reason: str) -> None:
    """The job's first durable unit gave up. A job it had not started fails, with the reason;
    one it had started (planned, its fan-out cut short) goes on: the sweep of stalled jobs
    sends the chunks that were never sent, as it does any chunk that never began."""
    job = store.get_job(job_id)
    if job is not None and job.state == "queued":
        store.fail_job(job_id, reason)


def finish_failed(store: JobStore, job_id: str, reason: str) -> None:
    """The finishing unit gave up: the job's status says so, rather than `running` for ever."""
    job = store.get_job(job_id)
    failing = job is not None and job.error is None  # not told before: count it ended once
    if store.fail_finish(job_id, f"the job's results could not be written: {reason}") and failing:
        metrics.job_ended_in(store, job_id)
