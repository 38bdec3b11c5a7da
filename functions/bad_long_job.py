"""demo/bad_long_job: the anti-pattern on purpose, to show what a platform time limit costs.

The whole job runs in one step with no retries under BAD_JOB_TIMEOUT_S, standing in for
Lambda's 15-minute wall. When the budget runs out nothing was checkpointed: the run fails and
the job store shows every chunk it never finished.
"""

from __future__ import annotations

import asyncio
from typing import Any

import inngest

from chunking.planning import plan
from chunking.runner import attempt_chunk, settle
from chunking.settings import get_settings
from functions.client import inngest_client
from functions.deps import get_store, spec_from_event
from functions.events import BAD_LONG_JOB
from functions.start_job import create_or_adopt_job


async def run_whole_job(job_id: str, budget_s: float) -> dict[str, Any]:
    store = get_store()
    job = await asyncio.to_thread(store.get_job, job_id)
    assert job is not None  # created by the step before
    spec, items_done, reached = job.spec, 0, 0
    try:
        async with asyncio.timeout(budget_s):
            for chunk in plan(spec.total_items, spec.chunk_size):
                reached = chunk.index
                # No retries in the anti-pattern: every attempt is the last one.
                outcome = await attempt_chunk(store, job_id, chunk.index, last_attempt=True)
                if outcome.outcome == "succeeded":
                    items_done += chunk.size
    except TimeoutError:
        lost = spec.total_items - items_done
        reason = (
            f"time budget of {budget_s:g}s (BAD_JOB_TIMEOUT_S) ran out after {items_done} of "
            f"{spec.total_items} items; nothing was checkpointed, so {lost} items are lost"
        )
        for index in range(reached, job.total_chunks):
            await settle(store, job_id, index, error=reason)
        raise inngest.NonRetriableError(reason) from None
    return {"job_id": job_id, "items_processed": items_done}


@inngest_client.create_function(
    fn_id="bad-long-job",
    name="Anti-pattern: whole job in one step",
    trigger=inngest.TriggerEvent(event=BAD_LONG_JOB),
    retries=0,
)
async def bad_long_job(ctx: inngest.Context) -> dict[str, Any]:
    spec = spec_from_event(ctx.event.data)
    job = await ctx.step.run("create-job", create_or_adopt_job, spec.model_dump(mode="json"))
    if not job["started"]:
        return {"job_id": job["job_id"], "duplicate": True}
    result: dict[str, Any] = await ctx.step.run(
        "process-everything-at-once", run_whole_job, job["job_id"], get_settings().bad_job_timeout_s
    )
    return result
