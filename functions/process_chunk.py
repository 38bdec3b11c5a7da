"""demo/process_chunk: one chunk per run, retried by Inngest, its outcome recorded once."""

from __future__ import annotations

import asyncio
from typing import Any

import inngest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chunking.api_errors import describe
from chunking.runner import attempt_chunk, settle
from chunking.settings import get_settings
from chunking.spec import JOB_ID_PATTERN, Priority
from functions.client import inngest_client
from functions.deps import get_store, inngest_retries
from functions.events import (
    CANCEL_ON_JOB_CANCELLED,
    PRIORITY_EXPRESSION,
    PROCESS_CHUNK,
    TENANT_KEY,
    job_completed_event,
)

settings = get_settings()


class ChunkRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    chunk_index: int = Field(ge=0)
    # Read by Inngest (priority, per-tenant concurrency), not by the chunk itself.
    priority: Priority = "normal"
    tenant: str = Field("default", pattern=JOB_ID_PATTERN)


def parse_chunk_ref(data: object) -> ChunkRef:
    try:
        return ChunkRef.model_validate(data)
    except ValidationError as err:
        raise inngest.NonRetriableError(
            f"invalid {PROCESS_CHUNK} event data: {describe(err)}"
        ) from err


async def run_chunk_step(job_id: str, index: int, platform_attempt: int) -> dict[str, Any]:
    """The "run-chunk" step: the core's attempt, its errors mapped to Inngest's retries."""
    last_attempt = platform_attempt >= settings.chunk_retries
    # PermanentError here means the job or chunk does not exist: nothing to record.
    with inngest_retries():
        outcome = await attempt_chunk(
            get_store(), job_id, index,
            last_attempt=last_attempt, budget_s=get_settings().inngest_step_budget_s,
        )  # fmt: skip
    return outcome.as_dict()


async def send_job_completed(job_id: str) -> str:
    """Send demo/job_completed with the job's final status JSON as its data."""
    status = await asyncio.to_thread(get_store().status, job_id)
    if status is None:
        raise inngest.NonRetriableError(f"job_id {job_id!r} vanished from the job store")
    await inngest_client.send(job_completed_event(status.model_dump(mode="json")))
    return status.status


async def emit_completion(ctx: inngest.Context, job_id: str) -> None:
    await ctx.step.run("emit-job-completed", send_job_completed, job_id)


async def record_failure(job_id: str, index: int, error: str) -> dict[str, Any]:
    return (await settle(get_store(), job_id, index, error=error)).as_dict()


async def record_run_failure(ctx: inngest.Context) -> None:
    """Safety net: a run that failed outside the chunk's own handling still settles its chunk."""
    original = ctx.event.data.get("event", {})
    ref = parse_chunk_ref(original.get("data") if isinstance(original, dict) else None)
    error = ctx.event.data.get("error", {})
    message = error.get("message", "unknown") if isinstance(error, dict) else str(error)
    outcome = await ctx.step.run(
        "record-run-failure", record_failure, ref.job_id, ref.chunk_index, f"run failed: {message}"
    )
    if outcome["recorded"] and outcome["job_finished"]:
        await emit_completion(ctx, ref.job_id)


@inngest_client.create_function(
    fn_id="process-chunk",
    name="Process one chunk",
    trigger=inngest.TriggerEvent(event=PROCESS_CHUNK),
    retries=settings.chunk_retries,
    concurrency=[
        inngest.Concurrency(limit=settings.chunk_concurrency),
        inngest.Concurrency(limit=settings.tenant_chunk_concurrency, key=TENANT_KEY),
    ],
    priority=inngest.Priority(run=PRIORITY_EXPRESSION),
    cancel=[CANCEL_ON_JOB_CANCELLED],
    on_failure=record_run_failure,
)
async def process_chunk(ctx: inngest.Context) -> dict[str, Any]:
    ref = parse_chunk_ref(ctx.event.data)
    outcome: dict[str, Any] = await ctx.step.run(
        "run-chunk", run_chunk_step, ref.job_id, ref.chunk_index, ctx.attempt
    )
    if outcome["job_finished"]:
        await emit_completion(ctx, ref.job_id)
    if outcome["outcome"] == "failed":
        # Settled and recorded: fail the run visibly, but never retry it.
        raise inngest.NonRetriableError(outcome["error"])
    return outcome
