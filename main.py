"""FastAPI app of the local path: serves the Inngest functions and the /jobs API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import inngest.fast_api
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError

from chunking.prepare import prepare_spec
from chunking.progress import job_events
from chunking.settings import get_settings
from chunking.spec import JobSpec, new_job_id
from chunking.status import JobStatus
from chunking.store import JobConflictError, JobEndedError, request_cancel
from functions import ALL_FUNCTIONS
from functions.client import inngest_client
from functions.deps import get_store
from functions.events import job_cancelled_event, start_job_event

logger = logging.getLogger("long_jobs")
app = FastAPI(title="Long jobs, chunked", version="0.1.0")
inngest.fast_api.serve(app, inngest_client, ALL_FUNCTIONS)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    await asyncio.to_thread(get_store().list_jobs, 1)  # proves the job store answers
    return {"status": "ok"}


@app.post("/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=None)
async def create_job(
    request: Request, spec: Annotated[JobSpec | None, Body()] = None
) -> dict[str, Any] | JSONResponse:
    """Record the job as `queued`, then send `demo/start_job`: its status URL answers at once."""
    try:
        spec = await asyncio.to_thread(prepare_spec, spec or JobSpec(), "local")
    except ValidationError as err:  # e.g. a bad line in the llm input: 422 like any bad body
        errors = err.errors(include_url=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from err
    store = get_store()
    job_id = spec.job_id or new_job_id()
    try:
        job, created = await asyncio.to_thread(store.create_job, job_id, spec, "local")
    except JobConflictError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(err)) from err
    body = {"job_id": job_id, "status_url": str(request.url_for("get_job", job_id=job_id))}
    if not created and not await asyncio.to_thread(store.requeue_job, job_id):
        # Same job_id and spec as before: an idempotent retry, nothing new is sent.
        return JSONResponse({**body, "status": job.state}, status_code=status.HTTP_200_OK)
    try:
        await inngest_client.send(
            start_job_event(job.spec.model_dump(mode="json"), resend=not created)
        )
    except Exception as err:
        reason = f"could not send demo/start_job to Inngest: {err}"
        await asyncio.to_thread(store.fail_job, job_id, reason)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"{reason}. The job is marked failed; retry with the same job_id.",
        ) from err
    return {**body, "status": "queued"}


@app.get("/jobs/{job_id}", response_model=JobStatus)
async def get_job(job_id: str) -> JobStatus:
    job_status = await asyncio.to_thread(get_store().status, job_id)
    if job_status is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with job_id {job_id!r}")
    return job_status


@app.post("/jobs/{job_id}/cancel", response_model=JobStatus)
async def cancel_job(job_id: str) -> JobStatus:
    """Chunks not yet started will not run; running ones finish. 409 if the job has ended."""
    try:
        cancelled = await asyncio.to_thread(request_cancel, get_store(), job_id)
    except JobEndedError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(err)) from err
    if cancelled is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with job_id {job_id!r}")
    try:
        # The store already says cancelled, and every chunk checks it before it starts; the
        # event lets Inngest drop the waiting runs without starting them at all.
        await inngest_client.send(job_cancelled_event(job_id))
    except Exception as err:
        logger.warning("demo/job_cancelled not sent (chunks still see the cancel): %s", err)
    return cancelled


async def existing_job(job_id: str) -> str:
    # A dependency, so an unknown job is a 404 before the event stream's 200 is sent.
    if await asyncio.to_thread(get_store().get_job, job_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with job_id {job_id!r}")
    return job_id


def resume_point(last_event_id: Annotated[str | None, Header()] = None) -> int:
    if last_event_id is None:
        return 0
    if not last_event_id.isdigit():
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"Last-Event-ID {last_event_id!r} is not an id this stream sent (a number)",
        )
    return int(last_event_id)


@app.get("/jobs/{job_id}/events", response_class=EventSourceResponse)
async def job_progress(
    job_id: Annotated[str, Depends(existing_job)], after: Annotated[int, Depends(resume_point)]
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: `chunk` per settled chunk (resumable with Last-Event-ID), `end` last."""
    poll_s = get_settings().sse_poll_interval_s
    async for event in job_events(get_store(), job_id, after, poll_s):
        yield ServerSentEvent(event=event.event, data=event.data, id=event.id)


@app.get("/jobs", response_model=list[JobStatus])
async def list_jobs(limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[JobStatus]:
    """The most recent jobs, newest first."""

    def statuses() -> list[JobStatus]:
        store = get_store()
        found = (store.status(job.job_id) for job in store.list_jobs(limit))
        return [s for s in found if s is not None]

    return await asyncio.to_thread(statuses)
