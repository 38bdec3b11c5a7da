"""retry-job: a job that ended partial or failed runs what failed again (demo/retry_job, sent by
`POST /jobs/{id}/retry`, or by hand), a page of chunks per step.

Its steps reopen the job's failed chunks and those with failed items (keeping every answer),
then send the reopened ones as chunk events of the retry's lineage (`redrive`: ids no earlier
run of the chunk used). Each step is bounded and idempotent (chunking.lifecycle.retry_page).
"""

from __future__ import annotations

import asyncio
from typing import Any

import inngest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chunking import lifecycle
from chunking.api_errors import describe
from chunking.lifecycle import RetryStep
from chunking.settings import get_settings
from chunking.spec import JOB_ID_PATTERN
from functions.client import inngest_client
from functions.deps import get_store
from functions.events import CANCEL_ON_JOB_CANCELLED, RETRY_JOB, chunk_event

# Steps a run may take (Inngest allows 1,000): two passes of 500-chunk pages over 100,000.
MAX_STEPS = 800


class RetryRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    redrive: int = Field(ge=1)


async def retry_page(job_id: str, redrive: int, phase: str, after: int) -> dict[str, Any]:
    """One page: reopened, or sent (inside the step, so a replay sends nothing again)."""
    store = get_store()
    page = await asyncio.to_thread(
        lifecycle.retry_page, store, job_id, redrive, RetryStep(phase, after)
    )
    if page.send:
        job = await asyncio.to_thread(store.get_job, job_id)
        if job is not None:
            spec = job.spec
            await inngest_client.send(
                [
                    chunk_event(job_id, i, spec.priority, spec.tenant, redrive=redrive)
                    for i in page.send
                ]
            )
    return {"phase": page.next.phase, "after": page.next.after} if page.next else {}


@inngest_client.create_function(
    fn_id="retry-job",
    name="Retry what a job's run left failed",
    trigger=inngest.TriggerEvent(event=RETRY_JOB),
    retries=get_settings().chunk_retries,
    cancel=[CANCEL_ON_JOB_CANCELLED],
)
async def retry_job(ctx: inngest.Context) -> dict[str, Any]:
    try:
        ref = RetryRef.model_validate(ctx.event.data)
    except ValidationError as err:
        raise inngest.NonRetriableError(f"invalid {RETRY_JOB} event data: {describe(err)}") from err
    step: dict[str, Any] = {"phase": "reopen", "after": -1}
    steps = 0
    while step and steps < MAX_STEPS:
        step = await ctx.step.run(
            f"{step['phase']}-{steps}",
            retry_page,
            ref.job_id,
            ref.redrive,
            step["phase"],
            step["after"],
        )
        steps += 1
    return {"job_id": ref.job_id, "redrive": ref.redrive, "steps": steps}
