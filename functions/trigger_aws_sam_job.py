"""demo/trigger_aws_sam_job: start the same JobSpec on the cloud path and wait for it, durably."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any
from urllib.parse import urljoin

import httpx
import inngest

from chunking.errors import retry_after_s
from chunking.settings import get_settings
from chunking.spec import new_job_id
from chunking.status import TERMINAL_STATUSES
from functions.client import inngest_client
from functions.deps import spec_from_event
from functions.events import TRIGGER_AWS_SAM_JOB


def _headers() -> dict[str, str]:
    key = get_settings().cloud_api_key
    return {"x-api-key": key} if key else {}


def _raise_for_status(response: httpx.Response) -> None:
    """4xx: our request is wrong, retrying cannot help. 429 waits; 5xx raises to be retried."""
    where = f"{response.request.method} {response.request.url}"
    if response.status_code == 429:
        raise inngest.RetryAfterError(
            f"{where} was rate-limited",
            retry_after=timedelta(seconds=retry_after_s(response.headers)),
        )
    if 400 <= response.status_code < 500:
        raise inngest.NonRetriableError(
            f"{where} answered {response.status_code}: {response.text[:1000]}"
        )
    response.raise_for_status()  # 5xx: an ordinary error, which Inngest retries


async def _request(method: str, url: str, payload: dict[str, Any] | None = None) -> Any:
    # httpx's network errors propagate as ordinary exceptions: Inngest retries the step.
    async with httpx.AsyncClient(timeout=get_settings().aws_request_timeout_s) as http:
        response = await http.request(method, url, json=payload, headers=_headers())
    _raise_for_status(response)
    return response.json()


async def start_cloud_job(start_url: str, payload: dict[str, Any]) -> dict[str, Any]:
    started: dict[str, Any] = await _request("POST", start_url, payload)
    if "status_url" not in started:
        raise inngest.NonRetriableError(f"POST {start_url} gave no status_url: {started}")
    started["status_url"] = urljoin(start_url, started["status_url"])
    return started


async def fetch_cloud_status(status_url: str) -> dict[str, Any]:
    status: dict[str, Any] = await _request("GET", status_url)
    return status


@inngest_client.create_function(
    fn_id="trigger-aws-sam-job",
    name="Run a job on the AWS SAM stack",
    trigger=inngest.TriggerEvent(event=TRIGGER_AWS_SAM_JOB),
    retries=3,
)
async def trigger_aws_sam_job(ctx: inngest.Context) -> dict[str, Any]:
    settings = get_settings()
    spec = spec_from_event(ctx.event.data)
    if not settings.aws_start_url:
        raise inngest.NonRetriableError(
            "AWS_START_URL is not set: deploy the SAM stack in aws/ and set it to the "
            "API's /start URL (see README)"
        )
    # A job_id chosen once makes the POST idempotent: a retried start never runs a job twice.
    job_id = spec.job_id or await ctx.step.run("choose-job-id", asyncio.to_thread, new_job_id)
    payload = spec.model_copy(update={"job_id": job_id}).model_dump(mode="json")
    started = await ctx.step.run(
        "start-cloud-job", start_cloud_job, settings.aws_start_url, payload
    )
    polls = math.ceil(settings.aws_poll_timeout_s / settings.aws_poll_interval_s)
    status: dict[str, Any] = {}
    for n in range(1, polls + 1):
        status = await ctx.step.run(f"poll-status-{n}", fetch_cloud_status, started["status_url"])
        if status.get("status") in TERMINAL_STATUSES:
            return status
        await ctx.step.sleep(f"wait-{n}", timedelta(seconds=settings.aws_poll_interval_s))
    raise inngest.NonRetriableError(
        f"cloud job {job_id} is still {status.get('status')!r} after "
        f"{settings.aws_poll_timeout_s:g}s (AWS_POLL_TIMEOUT_S); follow it at "
        f"{started['status_url']}"
    )
