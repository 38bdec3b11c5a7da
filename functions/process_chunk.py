"""demo/process_chunk: one chunk per run, retried by Inngest, its outcome recorded once.

A run that stopped to respect its budget (having made progress) sends the chunk's next run as
a fresh event (a continuation: no retry spent); the run whose chunk finished the job sends
demo/finish_job, the job's finishing unit (functions.finish_job).

No step: a chunk's work is idempotent by construction (its outcome is settled once, every event
sent has a deterministic id), so nothing needs memoizing, and the executor's first request runs
the whole chunk and gets the run's final result: one round trip per chunk, not two (a step,
then the function's end, each queued behind the concurrency limits). A retry runs it all again
and finds what the last attempt already did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import inngest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chunking import recovery
from chunking.api_errors import describe
from chunking.runner import attempt_chunk, settle
from chunking.settings import get_settings
from chunking.spec import JOB_ID_PATTERN, Priority
from functions.client import inngest_client
from functions.deps import get_store, inngest_retries
from functions.events import (
    CANCEL_ON_JOB_CANCELLED,
    POLL_CHUNK,
    PRIORITY_EXPRESSION,
    PROCESS_CHUNK,
    TENANT_KEY,
    chunk_event,
    finish_job_event,
)
from functions.failures import FailedRun, failure_handler

settings = get_settings()


class ChunkRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    chunk_index: int = Field(ge=0)
    # Read by Inngest (priority, per-tenant concurrency), not by the chunk itself.
    priority: Priority = "normal"
    tenant: str = Field("default", pattern=JOB_ID_PATTERN)
    continuation: int = Field(0, ge=0)
    resend: int = Field(0, ge=0)
    sweep: int = Field(0, ge=0)
    poll: int = Field(0, ge=0)
    wait_s: float = Field(0, ge=0, le=86_400)
    redrive: int = Field(0, ge=0)


def parse_chunk_ref(data: object) -> ChunkRef:
    try:
        return ChunkRef.model_validate(data)
    except ValidationError as err:
        raise inngest.NonRetriableError(
            f"invalid {PROCESS_CHUNK} event data: {describe(err)}"
        ) from err


async def run_attempt(
    job_id: str, index: int, platform_attempt: int, continuation: int = 0, poll: int = 0
) -> dict[str, Any]:
    """The chunk's attempt (the whole run: no step), its errors mapped to Inngest's retries."""
    last_attempt = platform_attempt >= settings.chunk_retries
    # PermanentError here means the job or chunk does not exist: nothing to record.
    with inngest_retries(platform_attempt):
        outcome = await attempt_chunk(
            get_store(),
            job_id,
            index,
            last_attempt=last_attempt,
            budget_s=get_settings().inngest_step_budget_s,
            continuation=continuation,
            poll=poll,
        )
    return outcome.as_dict()


async def finish_event(job_id: str) -> inngest.Event:
    """The job's finishing event, for its current run (a retried job finishes again)."""
    job = await asyncio.to_thread(get_store().get_job, job_id)
    return finish_job_event(job_id, job.tally.redrives if job else 0)


async def send_finish(job_id: str) -> None:
    await inngest_client.send(await finish_event(job_id))


async def send_run(
    ref: ChunkRef, *, continuation: int | None = None, resend: int = 0, poll: int = 0,
    wait_s: float = 0.0,
) -> None:  # fmt: skip
    """Send the chunk's next run as a fresh event, in its lineage (its sweep, and the
    continuation it had reached unless told another)."""
    await inngest_client.send(
        chunk_event(
            ref.job_id,
            ref.chunk_index,
            ref.priority,
            ref.tenant,
            continuation=ref.continuation if continuation is None else continuation,
            resend=resend,
            sweep=ref.sweep,
            poll=poll,
            wait_s=wait_s,
            redrive=ref.redrive,
        )
    )


async def send_continuation(ref: ChunkRef) -> int:
    n = ref.continuation + 1
    await send_run(ref, continuation=n)
    return n


async def send_poll(ref: ChunkRef, wait_s: float) -> int:
    n = ref.poll + 1
    await send_run(ref, poll=n, wait_s=round(wait_s, 3))
    return n


async def send_resend(ref_data: dict[str, Any]) -> int:
    ref = ChunkRef.model_validate(ref_data)
    n = ref.resend + 1
    await send_run(ref, resend=n)
    return n


async def record_failure(
    job_id: str, index: int, error: str, resends: int, failed_at: str
) -> dict[str, Any]:
    store = get_store()
    action = await asyncio.to_thread(
        recovery.after_failed_run,
        store,
        job_id,
        index,
        resends,
        datetime.fromisoformat(failed_at),
    )
    if action != "settle":
        return {"action": action, "recorded": False, "job_finished": False}
    return {"action": action, **(await settle(store, job_id, index, error=error)).as_dict()}


def chunk_function(
    fn_id: str, name: str, event: str, cancel: list[inngest.Cancel] | None
) -> Callable[[Callable[[inngest.Context], Awaitable[dict[str, Any]]]], inngest.Function[Any]]:
    """A function that runs chunks: CHUNK_RETRIES, CHUNK_CONCURRENCY in all and
    TENANT_CHUNK_CONCURRENCY per tenant, high-priority jobs' chunks first."""
    return inngest_client.create_function(
        fn_id=fn_id,
        name=name,
        trigger=inngest.TriggerEvent(event=event),
        retries=settings.chunk_retries,
        concurrency=[
            inngest.Concurrency(limit=settings.chunk_concurrency),
            inngest.Concurrency(limit=settings.tenant_chunk_concurrency, key=TENANT_KEY),
        ],
        priority=inngest.Priority(run=PRIORITY_EXPRESSION),
        cancel=cancel,
    )


@chunk_function("process-chunk", "Process one chunk", PROCESS_CHUNK, [CANCEL_ON_JOB_CANCELLED])
async def process_chunk(ctx: inngest.Context) -> dict[str, Any]:
    return await run_chunk_ref(ctx, parse_chunk_ref(ctx.event.data))


async def run_chunk_ref(ctx: inngest.Context, ref: ChunkRef) -> dict[str, Any]:
    """A run of the chunk, and what it starts: its continuation, its next poll, the job's end."""
    outcome = await run_attempt(
        ref.job_id, ref.chunk_index, ctx.attempt, ref.continuation, ref.poll
    )
    if outcome["outcome"] == "continued":
        # Out of budget with its answers kept: the rest in a fresh run, no retry spent.
        await send_continuation(ref)
    if outcome["outcome"] == "waiting":
        # On the provider's batch: looked at again later, by a run that sleeps durably first.
        await send_poll(ref, outcome["wait_s"] or 0)
    if outcome["job_finished"]:
        await send_finish(ref.job_id)
    if outcome["outcome"] == "failed":
        # Settled and recorded: fail the run visibly, but never retry it.
        raise inngest.NonRetriableError(outcome["error"])
    return outcome


async def chunk_run_failed(ctx: inngest.Context, run: FailedRun) -> None:
    """Safety net: a run that failed outside the chunk's own handling still settles its chunk;
    one that never began (every delivery failed: the app was unreachable) runs again instead,
    as a fresh run, bounded by CHUNK_MAX_RESENDS (`chunks_resent` in the status)."""
    ref = parse_chunk_ref(run.data)
    outcome = await ctx.step.run(
        "record-run-failure",
        record_failure,
        ref.job_id,
        ref.chunk_index,
        f"run failed: {run.message}",
        ref.resend,
        run.failed_at.isoformat(),
    )
    if outcome["action"] == "resend":
        await ctx.step.run("resend-chunk", send_resend, ref.model_dump())
    if outcome["recorded"] and outcome["job_finished"]:
        await ctx.step.run("finish-job", send_finish, ref.job_id)


# No cancel: a cancelled job's chunk still cancels its provider batch, and keeps what came
# back, in these runs (the runner's wind-down), before it is recorded.
@chunk_function("poll-chunk", "Look at a chunk's provider batch again", POLL_CHUNK, None)
async def poll_chunk(ctx: inngest.Context) -> dict[str, Any]:
    """A chunk waiting on its provider's batch: sleep (durably: no process or thread is held,
    the app may restart meanwhile, and a sleeping run holds no concurrency), then run it."""
    ref = parse_chunk_ref(ctx.event.data)
    if ref.wait_s > 0:
        await ctx.step.sleep("wait-for-the-batch", timedelta(seconds=ref.wait_s))
    return await run_chunk_ref(ctx, ref)


process_chunk_failed = failure_handler(of=process_chunk)(chunk_run_failed)
poll_chunk_failed = failure_handler(of=poll_chunk)(chunk_run_failed)
