"""demo/process_chunk: one chunk per run, retried by Inngest, its outcome recorded once."""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import timedelta
from typing import Any

import inngest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chunking.errors import PermanentError, RateLimitedError
from chunking.planning import chunk_at
from chunking.settings import get_settings
from chunking.spec import JOB_ID_PATTERN
from chunking.workloads import run_chunk
from functions.client import inngest_client
from functions.deps import describe_validation_error, get_store
from functions.events import PROCESS_CHUNK, job_completed_event

settings = get_settings()


class ChunkRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    chunk_index: int = Field(ge=0)


def parse_chunk_ref(data: object) -> ChunkRef:
    try:
        return ChunkRef.model_validate(data)
    except ValidationError as err:
        raise inngest.NonRetriableError(
            f"invalid {PROCESS_CHUNK} event data: {describe_validation_error(err)}"
        ) from err


async def settle(
    job_id: str, index: int, *, error: str | None = None, items: int = 0, latency_ms: float = 0
) -> dict[str, Any]:
    settlement = await asyncio.to_thread(
        get_store().settle_chunk,
        job_id,
        index,
        succeeded=error is None,
        items=items,
        latency_ms=round(latency_ms, 3),
        error=error,
    )
    return {
        "job_id": job_id,
        "chunk_index": index,
        "outcome": "succeeded" if error is None else "failed",
        "error": error,
        "recorded": settlement.recorded,
        "job_finished": settlement.job_finished,
    }


async def attempt_chunk(job_id: str, index: int, platform_attempt: int) -> dict[str, Any]:
    """One attempt: run the workload and settle the chunk, or raise for Inngest to retry."""
    store = get_store()
    job = await asyncio.to_thread(store.get_job, job_id)
    if job is None:
        raise inngest.NonRetriableError(f"job_id {job_id!r}: no such job in the job store")
    try:
        chunk = chunk_at(job.spec.total_items, job.spec.chunk_size, index)
    except IndexError as err:
        raise inngest.NonRetriableError(f"job {job_id!r}: {err}") from err

    attempt = await asyncio.to_thread(store.begin_attempt, job_id, index)
    if attempt is None:  # a duplicate delivery of a settled chunk: never run or count it twice
        job = await asyncio.to_thread(store.get_job, job_id)
        finished = job is not None and job.settled_by == index
        return {"job_id": job_id, "chunk_index": index, "outcome": "duplicate",
                "error": None, "recorded": False, "job_finished": finished}  # fmt: skip

    last_attempt = platform_attempt >= settings.chunk_retries
    started = time.perf_counter()
    try:
        result = await run_chunk(job.spec, chunk, attempt)
    except PermanentError as err:
        return await settle(job_id, index, error=f"permanent: {err}")
    except Exception as err:  # transient, rate-limited, or a bug: all worth a retry
        if last_attempt:
            return await settle(
                job_id,
                index,
                error=f"gave up after {attempt} attempts: {type(err).__name__}: {err}",
            )
        if isinstance(err, RateLimitedError):
            raise inngest.RetryAfterError(
                str(err), retry_after=timedelta(seconds=err.retry_after_s)
            ) from err
        raise
    latency_ms = (time.perf_counter() - started) * 1000
    return await settle(job_id, index, items=result.items_processed, latency_ms=latency_ms)


async def send_job_completed(job_id: str) -> str:
    """Send demo/job_completed with the job's final status JSON as its data."""
    status = await asyncio.to_thread(get_store().status, job_id)
    if status is None:
        raise inngest.NonRetriableError(f"job_id {job_id!r} vanished from the job store")
    await inngest_client.send(job_completed_event(status.model_dump(mode="json")))
    return status.status


async def emit_completion(ctx: inngest.Context, job_id: str) -> None:
    await ctx.step.run("emit-job-completed", send_job_completed, job_id)


async def record_run_failure(ctx: inngest.Context) -> None:
    """Safety net: a run that failed outside the chunk's own handling still settles its chunk."""
    original = ctx.event.data.get("event", {})
    ref = parse_chunk_ref(original.get("data") if isinstance(original, dict) else None)
    error = ctx.event.data.get("error", {})
    message = error.get("message", "unknown") if isinstance(error, dict) else str(error)
    outcome = await ctx.step.run(
        "record-run-failure",
        functools.partial(settle, ref.job_id, ref.chunk_index, error=f"run failed: {message}"),
    )
    if outcome["recorded"] and outcome["job_finished"]:
        await emit_completion(ctx, ref.job_id)


@inngest_client.create_function(
    fn_id="process-chunk",
    name="Process one chunk",
    trigger=inngest.TriggerEvent(event=PROCESS_CHUNK),
    retries=settings.chunk_retries,
    concurrency=[inngest.Concurrency(limit=settings.chunk_concurrency)],
    on_failure=record_run_failure,
)
async def process_chunk(ctx: inngest.Context) -> dict[str, Any]:
    ref = parse_chunk_ref(ctx.event.data)
    outcome: dict[str, Any] = await ctx.step.run(
        "run-chunk", attempt_chunk, ref.job_id, ref.chunk_index, ctx.attempt
    )
    if outcome["job_finished"]:
        await emit_completion(ctx, ref.job_id)
    if outcome["outcome"] == "failed":
        # Settled and recorded: fail the run visibly, but never retry it.
        raise inngest.NonRetriableError(outcome["error"])
    return outcome
