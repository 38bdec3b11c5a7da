"""demo/finish_job: a job's finishing unit, once every chunk has settled.

Its own function, so what a finished job leaves behind (the llm workload's merged output) has
its own budget and retries, never the last chunk's: it runs `lifecycle.finish` (idempotent: a
redelivery writes the same output), then sends demo/job_completed with the final status (which
send-callback delivers), its id deterministic. Both are idempotent, so there is no step: one
round trip from the executor, and a retry does both again.
"""

from __future__ import annotations

import asyncio

import inngest

from chunking import lifecycle
from chunking.settings import get_settings
from functions.client import inngest_client
from functions.deps import get_store, inngest_retries
from functions.events import CANCEL_ON_JOB_CANCELLED, FINISH_JOB, job_completed_event
from functions.failures import FailedRun, failure_handler, record_for_job


async def finish(job_id: str, attempt: int = 0) -> None:
    budget_s = get_settings().inngest_step_budget_s
    with inngest_retries(attempt):
        async with asyncio.timeout(budget_s):
            await asyncio.to_thread(lifecycle.finish, get_store(), job_id)


async def send_job_completed(job_id: str) -> str:
    """Send demo/job_completed with the job's final status JSON as its data."""
    status = await asyncio.to_thread(get_store().status, job_id)
    if status is None:
        raise inngest.NonRetriableError(f"job_id {job_id!r} vanished from the job store")
    await inngest_client.send(job_completed_event(status.model_dump(mode="json")))
    return status.status


@inngest_client.create_function(
    fn_id="finish-job",
    name="Finish a job (its output, then its completion)",
    trigger=inngest.TriggerEvent(event=FINISH_JOB),
    retries=get_settings().chunk_retries,
    cancel=[CANCEL_ON_JOB_CANCELLED],
)
async def finish_job(ctx: inngest.Context) -> str:
    job_id = ctx.event.data.get("job_id")
    if not isinstance(job_id, str):
        raise inngest.NonRetriableError(f"{FINISH_JOB} without a job_id")
    await finish(job_id, ctx.attempt)
    return await send_job_completed(job_id)


@failure_handler(of=finish_job)
async def finish_job_failed(ctx: inngest.Context, run: FailedRun) -> None:
    """Safety net: when the finish gave up, the job's status says why (not `running`)."""
    await record_for_job(ctx, run, "record-finish-failure", lifecycle.finish_failed, run.message)
