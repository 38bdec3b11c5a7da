"""demo/start_job: the job's first durable unit. Adopt the job record, count (and index) its
items in steps of one budget each (resumed where the last stopped), start it, fan out its chunks.

A job whose spec says how many items it has is planned inside the first step; one that counts
its input (llm) takes `plan-N` steps, so no request ever reads the input whole.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

import inngest
from pydantic import ValidationError

from chunking import lifecycle, workload
from chunking.api_errors import describe
from chunking.planning import fan_out_batches
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import JobPath
from chunking.store import JobConflictError
from functions.client import inngest_client
from functions.deps import get_store, inngest_retries, spec_from_event
from functions.events import CANCEL_ON_JOB_CANCELLED, FAN_OUT_BATCH, START_JOB, chunk_event
from functions.failures import FailedRun, failure_handler, record_for_job


async def create_or_adopt_job(spec_data: dict[str, Any], path: JobPath = "local") -> dict[str, Any]:
    """Create the job, or adopt the `queued` one that `POST /jobs` wrote; plan it at once when
    its spec says its items (nothing to read)."""
    # The job id is generated inside this step, so a replay of the function sees the same id.
    try:
        spec = JobSpec.model_validate(spec_data)
        job = await asyncio.to_thread(lifecycle.adopt, get_store(), spec, path)
    except ValidationError as err:  # a bad input file is never worth a retry
        raise inngest.NonRetriableError(f"invalid JobSpec: {describe(err)}") from err
    except JobConflictError as err:
        raise inngest.NonRetriableError(str(err)) from err
    if workload.of(job.spec).known_items(job.spec) is None:
        return {"job_id": job.job_id, "planned": False}
    return {"job_id": job.job_id, "planned": True, **await plan_job(job.job_id, None)}


async def plan_job(job_id: str, resume: dict[str, int] | None, attempt: int = 0) -> dict[str, Any]:
    """One `plan-N` step: count and index within the step's budget, or pause to go on."""
    deadline = time.monotonic() + get_settings().inngest_step_budget_s
    with inngest_retries(attempt):  # e.g. S3 did not answer: our backoff, then again
        try:
            outcome = await asyncio.to_thread(lifecycle.plan, get_store(), job_id, resume, deadline)
        except LookupError as err:
            raise inngest.NonRetriableError(str(err)) from err
    return asdict(outcome)


async def send_chunk_events(
    job_id: str, first: int, stop: int, priority: str = "normal", tenant: str = "default"
) -> int:
    """Send one batch of chunk events; returns how many were sent.

    Inngest replays the function once per step, so the events are built here, inside the
    step, rather than in the function body: replays of a 100-batch fan-out then stay cheap.
    """
    job = await asyncio.to_thread(get_store().get_job, job_id)
    if job is not None and job.state == "cancelled":
        return 0  # cancelled while fanning out: the rest is never sent
    await inngest_client.send(
        [chunk_event(job_id, i, priority, tenant) for i in range(first, stop)]
    )
    return stop - first


@inngest_client.create_function(
    fn_id="start-job",
    name="Start a chunked job",
    trigger=inngest.TriggerEvent(event=START_JOB),
    retries=3,
    cancel=[CANCEL_ON_JOB_CANCELLED],
)
async def start_job(ctx: inngest.Context) -> dict[str, Any]:
    spec = spec_from_event(ctx.event.data)
    job = await ctx.step.run(
        "create-job", create_or_adopt_job, spec.model_dump(mode="json", exclude_unset=True)
    )
    job_id, planned = job["job_id"], job
    steps = 0
    while not planned.get("planned", True) or planned.get("resume"):
        # Each step makes progress (the index grows), so this ends; Inngest bounds the steps.
        steps += 1
        planned = await ctx.step.run(
            f"plan-{steps}", plan_job, job_id, planned.get("resume"), ctx.attempt
        )
    total_chunks = planned["total_chunks"]
    if planned["failed"]:
        return {"job_id": job_id, "failed": planned["failed"]}
    if not planned["started"]:
        # Already started by an earlier event with this job_id: one job, one fan-out.
        return {"job_id": job_id, "total_chunks": total_chunks, "duplicate": True}
    send_steps = 0
    for send_steps, indexes in enumerate(fan_out_batches(total_chunks, FAN_OUT_BATCH), start=1):
        await ctx.step.run(
            f"fan-out-{send_steps}",
            send_chunk_events,
            job_id,
            indexes.start,
            indexes.stop,
            spec.priority,
            spec.tenant,
        )
    return {"job_id": job_id, "total_chunks": total_chunks, "send_steps": send_steps}


@failure_handler(of=start_job)
async def start_job_failed(ctx: inngest.Context, run: FailedRun) -> None:
    """Safety net: a job whose start gave up says so instead of waiting for ever."""
    reason = f"{START_JOB} failed: {run.message}"
    await record_for_job(ctx, run, "mark-job-failed", lifecycle.start_failed, reason)
