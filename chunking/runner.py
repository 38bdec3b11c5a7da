"""One attempt at one chunk, the same on both paths: run the workload, record the outcome once.

Adapters call `attempt_chunk` and translate what it raises into their platform's retry
mechanism: TransientError and unexpected errors -> retry with backoff, RateLimitedError ->
retry after the wait asked for, PermanentError -> no retry. What it returns is settled, except
`continued`: the chunk stopped to respect its budget having made progress, and the adapter
starts a new run of it (a continuation: a fresh event or message, which spends no retry);
and `waiting`: the chunk waits on its provider's batch, and the adapter starts its next run
`wait_s` later without holding anything meanwhile (an Inngest durable sleep, a delayed SQS
message), a `poll` that also spends no retry.
Continuations are bounded twice: each one answered something (so at most one per item) or
waited for the model's rate limit (bounded in time by the workload), and at most
CHUNK_MAX_CONTINUATIONS of them; past that, running out of budget is a retryable failure like
any other, bounded by the retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Literal

from chunking import metrics, workload
from chunking.errors import PermanentError, TransientError
from chunking.planning import chunk_at
from chunking.settings import get_settings
from chunking.status import JobRecord
from chunking.store import JobNotRunningError, JobStore
from chunking.workload import OutOfBudget, StopJob, WaitFor

logger = logging.getLogger(__name__)
Outcome = Literal["succeeded", "failed", "duplicate", "cancelled", "continued", "waiting"]


@dataclass(frozen=True)
class AttemptOutcome:
    job_id: str
    chunk_index: int
    outcome: Outcome
    error: str | None
    recorded: bool  # this attempt wrote the chunk's outcome
    job_finished: bool  # this chunk's outcome finished the job: announce it
    wait_s: float | None = None  # `waiting`: start the chunk's next run this much later

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def settle(
    store: JobStore,
    job_id: str,
    index: int,
    *,
    error: str | None = None,
    items: int = 0,
    latency_ms: float | None = None,
    begun_only: bool = False,
    expected: JobRecord | None = None,
    stopping: bool = False,
) -> AttemptOutcome:
    """Record a chunk's outcome (once, whatever the deliveries), after what it leaves behind.

    When it finishes the job (`job_finished`), the adapter starts the job's finishing unit
    (`lifecycle.finish`, then the completion's announcement): never inside this chunk's run.
    """
    job = await _job(store, job_id)
    usage = None
    lost = 0
    if job is not None:
        usage = await asyncio.to_thread(workload.of(job.spec).before_settle, store, job, index)
        if error is not None:  # its items with no result of their own are lost with it
            size = chunk_at(job.total_items, job.spec.chunk_size, index).size
            answered = (usage.items_answered + usage.items_failed) if usage else 0
            lost = max(0, size - answered)
    settlement = await asyncio.to_thread(
        store.settle_chunk,
        job_id,
        index,
        succeeded=error is None,
        items=items,
        latency_ms=None if latency_ms is None else round(latency_ms, 3),
        error=error,
        begun_only=begun_only,
        usage=usage,
        expected=expected,
        items_lost=lost,
    )
    outcome: Outcome = "succeeded" if error is None else "failed"
    if settlement.recorded and job is not None:  # counted once, whatever the deliveries
        # At the price paid: a job through the provider's batch API pays its discounted price.
        discount = workload.of(job.spec).batch_discount(job.spec) or 0.0
        prompt_price, completion_price = get_settings().llm_prices
        prices = (prompt_price * (1 - discount), completion_price * (1 - discount))
        metrics.chunk_settled(job.path, outcome, latency_ms, usage, prices)
        if settlement.finished_as and not workload.of(job.spec).produces_output:
            metrics.job_ended(job.path, settlement.finished_as)
        failures = lost or (usage and usage.items_failed)
        if failures and not stopping and not settlement.job_finished:
            await _stop_past_threshold(store, job)
    return AttemptOutcome(
        job_id=job_id,
        chunk_index=index,
        outcome=outcome,
        error=error,
        recorded=settlement.recorded,
        job_finished=settlement.job_finished,
    )


async def _stop_past_threshold(store: JobStore, job: JobRecord) -> None:
    """Stop the job once more of its items have failed than its `max_failed_items`: the rest
    of a broken job is not worth its cost."""
    if job.spec.max_failed_items is None:
        return
    current = await asyncio.to_thread(store.get_job, job.job_id)
    if current is None or current.state != "running" or current.stopped_by:
        return
    failed = current.tally.items_failed + current.tally.items_lost
    limit = current.spec.failed_items_limit(current.total_items)
    if limit is not None and failed > limit:
        given = current.spec.max_failed_items
        reason = (
            f"failure threshold passed: {failed} items failed, more than max_failed_items="
            f"{given!r}" + (f" ({limit} of {current.total_items} items)" if given != limit else "")
        )
        await asyncio.to_thread(store.stop_job, job.job_id, "max_failed_items", reason)


# A job's spec never changes once recorded (another spec under the same id is refused), so a
# worker reads it once per job rather than once per chunk. Bounded, like a Lambda container.
_known_jobs: OrderedDict[str, JobRecord] = OrderedDict()
KNOWN_JOBS_MAX = 256


def _remember(job: JobRecord) -> None:
    if job.state == "queued":
        return  # not planned yet: its items may still be counted
    _known_jobs[job.job_id] = job
    _known_jobs.move_to_end(job.job_id)
    while len(_known_jobs) > KNOWN_JOBS_MAX:
        _known_jobs.popitem(last=False)


def forget_jobs() -> None:
    """Drop the cached specs (tests reuse job ids across separate stores)."""
    _known_jobs.clear()


async def _job(store: JobStore, job_id: str) -> JobRecord | None:
    return (await _known_or_read(store, job_id))[0]


async def _known_or_read(store: JobStore, job_id: str) -> tuple[JobRecord | None, bool]:
    """The job as this process knows it, or read now (then True: its tally is fresh)."""
    if known := _known_jobs.get(job_id):
        _known_jobs.move_to_end(job_id)
        return known, False
    job = await asyncio.to_thread(store.get_job, job_id)
    if job is not None:
        _remember(job)
    return job, True


async def _run_failed(store: JobStore, job_id: str, index: int, err: BaseException) -> None:
    """End the run's span in the chunk's timeline (`retried`, with why) before the platform
    retries it. Best effort: the retry must go ahead whatever happens here."""
    try:
        await asyncio.to_thread(store.end_attempt, job_id, index, f"{type(err).__name__}: {err}")
    except Exception:
        logger.warning(
            "chunk %s of job %s: its failed run's end not recorded", index, job_id, exc_info=True
        )


async def _not_running(store: JobStore, job_id: str, index: int) -> AttemptOutcome:
    """No attempt may begin: the job was cancelled (or has ended, or is gone)."""
    current = await asyncio.to_thread(store.get_job, job_id)
    if current is None:
        raise PermanentError(f"job_id {job_id!r}: no such job in the job store")
    if current.state == "running" and current.stopped_by:
        return await _stopped(store, current, index)
    if current.state != "cancelled":
        return await _duplicate(store, job_id, index, current)
    # Not started, so it never will. A chunk begun before the cancel and now back for a
    # retry (or redriven) would stay "running" for ever: it is recorded failed instead, so
    # the job's accounting adds up. One never begun is not recorded: it is cancelled. What it
    # started outside (a provider's batch) is stopped first, and what came back kept.
    reason = "cancelled: the job was cancelled before this chunk's retry"
    try:
        kept = await workload.of(current.spec).wind_down(store, current, index)
    except WaitFor as err:
        return AttemptOutcome(job_id, index, "waiting", str(err), False, False, err.wait_s)
    except PermanentError as err:
        kept = f"what it started could not be stopped: {err}"
    if kept:
        reason = f"cancelled: the job was cancelled while this chunk ran; {kept}"
    await settle(store, job_id, index, error=reason, begun_only=True)
    return AttemptOutcome(job_id, index, "cancelled", None, False, False)


async def _stopped(store: JobStore, job: JobRecord, index: int) -> AttemptOutcome:
    """The job was stopped (its spend cap, its failure threshold): the chunk never runs again
    and is settled failed (a never-begun one too, so the job finishes and its output is
    merged with what was answered). Its provider batch under way, if any, is still polled to
    its end (the store lets a poll begin): what is in flight is paid for already."""
    reason = f"not run: the job was stopped ({job.error})"
    try:
        if kept := await workload.of(job.spec).wind_down(store, job, index):
            reason = f"stopped: the job was stopped ({job.error}); {kept}"
    except WaitFor as err:
        return AttemptOutcome(job.job_id, index, "waiting", str(err), False, False, err.wait_s)
    except PermanentError as err:
        reason += f"; what it started could not be stopped: {err}"
    return await settle(store, job.job_id, index, error=reason, stopping=True)


async def _duplicate(
    store: JobStore, job_id: str, index: int, current: JobRecord | None = None
) -> AttemptOutcome:
    """A delivery of a chunk that has settled. The finishing delivery may have died before it
    started the job's finishing unit: told again, its adapter starts it (it is idempotent)."""
    current = current or await asyncio.to_thread(store.get_job, job_id)
    finished = current is not None and current.settled_by == index
    return AttemptOutcome(job_id, index, "duplicate", None, False, finished)


async def attempt_chunk(
    store: JobStore,
    job_id: str,
    index: int,
    *,
    last_attempt: bool,
    budget_s: float | None = None,
    continuation: int = 0,
    poll: int = 0,
) -> AttemptOutcome:
    """Run one attempt; on the platform's last attempt a retryable failure is settled too.

    `continuation` (n > 0): the n-th run going on where one that ran out of budget stopped;
    `poll` (n > 0): the n-th run going on from one that left the chunk waiting.

    `budget_s` bounds the workload: past it the attempt fails as a TimeoutError (retryable),
    early enough for the outcome to be recorded before the platform kills the run.
    Raises PermanentError (before anything is recorded) when the job or chunk does not exist.
    """
    # What the chunk needs of its job (the spec, the sizes) never changes once it runs: known
    # to this process, it is not read again. Whether the job still runs (not cancelled), the
    # attempt's own write checks, when it begins.
    job, read_now = await _known_or_read(store, job_id)
    if job is None:
        raise PermanentError(f"job_id {job_id!r}: no such job in the job store")
    # Read for this attempt, the job's tally is what its settlement is first tried on: an
    # attempt begun writes only counters, so unless a settlement came between, no second read.
    known = job if read_now else None
    try:
        chunk = chunk_at(job.total_items, job.spec.chunk_size, index)
    except IndexError as err:
        raise PermanentError(f"job {job_id!r}: {err}") from err
    try:
        attempt = await asyncio.to_thread(
            store.begin_attempt, job_id, index, continuation=continuation > 0 or poll > 0
        )
    except JobNotRunningError:
        return await _not_running(store, job_id, index)
    if attempt is None:  # a duplicate delivery of a settled chunk: never run or count it twice
        return await _duplicate(store, job_id, index)
    if not poll:  # a poll of a provider's batch is no attempt at the chunk
        metrics.chunk_begun(job.path)

    started = time.perf_counter()
    try:
        async with asyncio.timeout(budget_s):
            result = await workload.of(job.spec).run_chunk(store, job, chunk, attempt, budget_s)
    except StopJob as err:
        await asyncio.to_thread(store.stop_job, job_id, err.stopped_by, str(err))
        reason = f"stopped: {err}"
        return await settle(store, job_id, index, error=reason, expected=known, stopping=True)
    except WaitFor as err:
        why = str(err)
        await asyncio.to_thread(store.end_attempt, job_id, index, why, "waiting")
        return AttemptOutcome(job_id, index, "waiting", why, False, False, err.wait_s)
    except OutOfBudget as err:
        if continuation < get_settings().chunk_max_continuations:
            return AttemptOutcome(job_id, index, "continued", str(err), False, False)
        spent = TransientError(f"{err} (and its {continuation} continuations are spent)")
        if last_attempt:
            reason = f"gave up after {attempt} attempts: {spent}"
            return await settle(store, job_id, index, error=reason, expected=known)
        await _run_failed(store, job_id, index, spent)
        raise spent from err
    except PermanentError as err:
        return await settle(store, job_id, index, error=f"permanent: {err}", expected=known)
    except Exception as err:  # transient, rate-limited, or a bug: all worth a retry
        if last_attempt:
            what = f"ran past its {budget_s:g}s budget" if isinstance(err, TimeoutError) else err
            reason = f"gave up after {attempt} attempts: {type(err).__name__}: {what}"
            return await settle(store, job_id, index, error=reason, expected=known)
        await _run_failed(store, job_id, index, err)
        raise
    latency_ms = (time.perf_counter() - started) * 1000
    items = result.items_processed
    return await settle(store, job_id, index, items=items, latency_ms=latency_ms, expected=known)
