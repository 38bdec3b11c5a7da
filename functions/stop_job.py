"""stop-cancelled-job: when a job is cancelled, stop at once what its running chunks started
outside (a batch-mode job's provider batches), a page of chunks per step.

Triggered by demo/job_cancelled, after the cancel is in the store; each step is bounded (a page
of chunks) and idempotent, so a retried or redelivered run only finds less to stop. The chunks'
own runs then keep what came back and are recorded (chunking.runner's wind-down).
"""

from __future__ import annotations

from typing import Any

import inngest

from chunking import lifecycle
from chunking.settings import get_settings
from functions.client import inngest_client
from functions.deps import get_store
from functions.events import JOB_CANCELLED

# Steps a run may take (Inngest allows 1,000): pages of 500 chunks cover MAX_CHUNKS (100,000).
MAX_PAGES = 400


async def stop_page(job_id: str, after: int) -> int | None:
    return await lifecycle.stop_cancelled(get_store(), job_id, after)


@inngest_client.create_function(
    fn_id="stop-cancelled-job",
    name="Stop what a cancelled job started outside",
    trigger=inngest.TriggerEvent(event=JOB_CANCELLED),
    retries=get_settings().chunk_retries,
)
async def stop_cancelled_job(ctx: inngest.Context) -> dict[str, Any]:
    job_id = ctx.event.data.get("job_id")
    if not isinstance(job_id, str):
        raise inngest.NonRetriableError(f"{JOB_CANCELLED} without a job_id")
    after: int | None = -1
    pages = 0
    while after is not None and pages < MAX_PAGES:
        after = await ctx.step.run(f"stop-page-{pages}", stop_page, job_id, after)
        pages += 1
    return {"job_id": job_id, "pages": pages}
