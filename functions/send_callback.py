"""demo/job_completed -> the job's callback_url: the signed summary, retried in its own run.

A function of its own, so a slow or failing receiver never holds up a chunk: Inngest retries the
run after our backoff, waits out a 429's Retry-After, and gives up at once on an answer that
retrying cannot change (a 4xx, or a target that is no longer allowed). No step around the POST:
it is the run's only work, so one round trip from the executor delivers it (the receiver
deduplicates a repeat by `X-Callback-Id`).
"""

from __future__ import annotations

import inngest

from chunking.callbacks import send_job_callback
from functions.client import inngest_client
from functions.deps import get_store, inngest_retries
from functions.events import JOB_COMPLETED

CALLBACK_RETRIES = 5


async def post_callback(job_id: str, attempt: int = 0) -> str:
    with inngest_retries(attempt):
        return await send_job_callback(get_store(), job_id)


@inngest_client.create_function(
    fn_id="send-callback",
    name="Send a job's completion callback",
    trigger=inngest.TriggerEvent(event=JOB_COMPLETED),
    retries=CALLBACK_RETRIES,
)
async def send_callback(ctx: inngest.Context) -> str:
    job_id = ctx.event.data.get("job_id")
    if not isinstance(job_id, str):
        raise inngest.NonRetriableError(f"{JOB_COMPLETED} without a job_id")
    return await post_callback(job_id, ctx.attempt)
