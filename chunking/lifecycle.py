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
- `cancel`: chunks not yet started never run; running ones finish (JobEndedError if it ended);
  then `stop_cancelled`, its own durable unit, stops what they started outside at once (the
  provider batches of a batch-mode job).
- `retry`: a job that ended `partial` or `failed` runs again, only what failed: its
  `retry_page`s (its own durable unit, a page of chunks a step) reopen its failed chunks and
  those with failed items (forgetting those items, keeping every answer), then hand the
  reopened chunks to the adapter to send; they settle, the job finishes and merges anew.
  The DLQ redrive (tools/dlq.py) reopens its chunks the same way (`reopen`).
- `finish`: what a finished job leaves behind, re-run safely on a redelivery.
- `start_failed`, `finish_failed`: what a job's status says when its first or finishing unit
  gave up (a chunk's failed run, and a stalled job's lost chunks: chunking/recovery.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

from chunking import metrics, workload
from chunking.one_thread import OneThread
from chunking.prepare import prepare_spec
from chunking.settings import get_settings
from chunking.spec import MAX_CHUNKS, JobSpec, chunk_count, new_job_id
from chunking.status import JobPath, JobRecord, JobStatus
from chunking.store import JobEndedError, JobStore
from chunking.workload import PlanError, PlanPaused


class JobNotRetryableError(Exception):
    """The job may not be retried now (running, succeeded, cancelled, or retried too often)."""


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


async def stop_cancelled(store: JobStore, job_id: str, after: int = -1) -> int | None:
    """A cancelled job's unit that stops at once what its running chunks started outside (its
    provider batches), a page of chunks at a time: the chunk index to go on from (a step, or a
    message, of its own), or None when done. Runs after `cancel`, never inside its request."""
    job = await asyncio.to_thread(store.get_job, job_id)
    if job is None or job.state != "cancelled":
        return None
    return await workload.of(job.spec).stop_outside(store, job, after)


def retry(store: JobStore, job_id: str) -> JobStatus | None:
    """Make a job that ended `partial` or `failed` run again (its status after; None if there
    is no such job), in constant time: the adapter then starts its retry unit (`retry_page`)
    for redrive number `status.redrives`. Raises JobNotRetryableError. Blocking I/O."""
    job = store.get_job(job_id)
    if job is None:
        return None
    current = store.status_of(job)
    if job.state == "failed" and job.started_at is None:
        raise JobNotRetryableError(f"job {job_id} never started ({job.error}): submit it again")
    if current.status not in ("partial", "failed") or job.state != "finished":
        what = current.status
        raise JobNotRetryableError(
            f"job {job_id} is {what}: only a job that ended partial or failed is retried"
        )
    most = get_settings().job_max_redrives
    if job.tally.redrives >= most:
        raise JobNotRetryableError(
            f"job {job_id} was retried {job.tally.redrives} times, the most JOB_MAX_REDRIVES "
            "allows: submit what failed as a new job (its errors file lists it)"
        )
    if not store.retry_job(job_id):
        raise JobNotRetryableError(f"job {job_id} is being retried already")
    metrics.job_retried(job.path)
    return store.status(job_id)


def retry_unsent(store: JobStore, job_id: str, reason: str) -> None:
    """The adapter could not start the retry's unit: the job ends again, saying why (and may
    be retried again)."""
    store.end_retry(job_id, reason)


RETRY_PAGE = 500  # chunks a retry unit's step looks at


@dataclass(frozen=True)
class RetryStep:
    """Where a retry unit goes on: `reopen` pages (every chunk), then `send` pages (the
    reopened ones, handed to the adapter), each after chunk index `after`."""

    phase: str
    after: int


@dataclass(frozen=True)
class RetryPage:
    next: RetryStep | None  # None: done
    send: list[int]  # chunk indexes to send now (the `send` phase's)


def reopen(store: JobStore, job_id: str, index: int) -> bool:
    """Let a settled chunk run again, keeping every answer it got: its failed items are
    forgotten first (so they are asked again), then its outcome undone. A retry and the DLQ
    redrive both do this. False when it had nothing to run again."""
    store.forget_failed_items(job_id, index)
    return store.reopen_chunk(job_id, index)


def retry_page(store: JobStore, job_id: str, redrive: int, step: RetryStep) -> RetryPage:
    """One step of a job's retry unit (redrive number `redrive`). Idempotent: a redelivered
    step finds its chunks reopened already, or sends them again (each send of a chunk that
    has settled meanwhile is a duplicate the runner drops). Reopening every chunk comes
    before sending any, so the job cannot finish while some are still to be reopened."""
    job = store.get_job(job_id)
    if job is None:
        return RetryPage(None, [])
    if job.state == "finished" and job.tally.redrives == redrive - 1:
        # A demo/retry_job event sent by hand: nothing has made it run again yet.
        try:
            retry(store, job_id)
        except JobNotRetryableError:
            return RetryPage(None, [])
        job = store.get_job(job_id)
    if job is None or job.state != "running" or job.tally.redrives != redrive:
        return RetryPage(None, [])  # cancelled meanwhile, or another retry's
    rows = store.chunk_page(
        job_id, "running" if step.phase == "send" else None, step.after, RETRY_PAGE
    )
    last = rows[-1].index if len(rows) == RETRY_PAGE else None
    if step.phase == "send":
        return RetryPage(None if last is None else RetryStep("send", last), [r.index for r in rows])
    for row in rows:
        if row.state == "failed" or (row.state == "succeeded" and row.items_failed):
            reopen(store, job_id, row.index)
    return RetryPage(RetryStep("reopen", last) if last is not None else RetryStep("send", -1), [])


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
