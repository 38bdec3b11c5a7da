"""FastAPI app of the local path: serves the Inngest functions and the /jobs API."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

import inngest.fast_api
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

import workloads  # noqa: F401 - registers the workloads with the core, as every entrypoint does
from chunking import lifecycle, metrics
from chunking.api_errors import (
    BodyError,
    ErrorBody,
    field_errors,
    invalid_request,
    invalid_spec,
    parse_json_body,
    preview,
)
from chunking.errors import InputUnavailableError
from chunking.job_files import NDJSON, JobFile, NoJobFileError, job_file
from chunking.progress import job_events
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import (
    ChunkPage,
    ChunkQuery,
    ItemPage,
    ItemQuery,
    JobListQuery,
    JobRecord,
    JobStatus,
    QueryInt,
    chunk_page,
    item_page,
    no_such_chunk,
)
from chunking.store import JobConflictError, JobEndedError
from chunking.tenancy import Caller, claim
from dashboard import routes as dashboard
from functions import ALL_FUNCTIONS
from functions.client import event_batcher, inngest_client
from functions.deps import get_store
from functions.events import START_JOB, job_cancelled_event, retry_job_event, start_job_event
from functions.metrics import SINK as METRICS
from guards import (
    BodyLimit,
    InngestSignatureWindow,
    guard_submission,
    no_cross_site,
    require_api_key,
)
from workloads.llm import blobs, uploads
from workloads.llm.input import ensure_input_root

logger = logging.getLogger("long_jobs")
metrics.use(METRICS)
settings = get_settings()
ensure_input_root()  # where llm inputs go (LLM_INPUT_ROOT): there from the first start
# Where POST /jobs' body is described: `openapi` files the JobSpec there.
JOB_SPEC_REF = "#/components/schemas/JobSpec"
app = FastAPI(title="Long jobs, chunked", version="0.1.0")
# The URL a sync registers comes from settings, never from a request's Host; in production an
# unsigned sync is refused (the SDK's default would accept one).
inngest.fast_api.serve(
    app,
    inngest_client,
    ALL_FUNCTIONS,
    serve_origin=settings.inngest_serve_origin,
    serve_path=settings.inngest_serve_path,
    public_path=settings.inngest_public_path,
    enable_unauthed_sync=False,
)
if not settings.inngest_dev_mode:
    app.add_middleware(
        InngestSignatureWindow,
        serve_path=settings.inngest_serve_path,
        signing_keys=(inngest_client.signing_key, inngest_client.signing_key_fallback),
        claim_once=lambda key, now, ttl_s: get_store().claim_once(key, now, ttl_s),
    )
# PUT /inputs/{sha256} is not limited here: it streams a whole input (LLM_INPUT_MAX_BYTES).
app.add_middleware(BodyLimit, prefixes=("/jobs", "/cloud/"), paths=("/inputs",))
app.add_middleware(dashboard.NoFraming)
app.add_middleware(
    TrustedHostMiddleware,
    allowed_hosts=[h.strip() for h in settings.allowed_hosts.split(",") if h.strip()],
)


# What each error status means, as /docs shows it; every one answers an ErrorBody.
WHY = {
    400: "the request cannot be used: `errors` names each field (body, query or path)",
    401: "API_KEY is set and x-api-key is missing or wrong",
    403: "a browser request from another site (Sec-Fetch-Site) may not change jobs",
    404: "no such job (or no such chunk in it)",
    409: "the job's state forbids it, or it has no such file (see the message)",
    413: "the body is over 1 MiB (an input's bytes: over LLM_INPUT_MAX_BYTES)",
    415: "the body is not Content-Type: application/json",
    502: "the cloud API did not answer, or answered a 5xx",
    503: "not now: the job could not be enqueued, an input or a job's file could not be read, "
    "or (/cloud) AWS_START_URL is not set; the message says which",
}


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's error answers for `responses=`, each with the error body."""
    return {code: {"model": ErrorBody, "description": WHY[code]} for code in codes}


jobs = APIRouter(
    dependencies=[Depends(require_api_key), Depends(no_cross_site)], responses=answers(401)
)


# One error contract with the cloud API: {"message"} (and "errors": [{field, message}] for bad
# input), 400 for a request that cannot run. FastAPI's own 422 echoes every input whole, and
# fails on an input JSON cannot carry.
@app.exception_handler(RequestValidationError)
async def unusable_request(_: Request, err: RequestValidationError) -> JSONResponse:
    return JSONResponse(invalid_request(field_errors(list(err.errors()))), status_code=400)


@app.exception_handler(StarletteHTTPException)
async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"message": err.detail}, status_code=err.status_code, headers=err.headers)


@app.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    """This process's metrics, for Prometheus to scrape (functions/metrics.py)."""
    return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    await asyncio.to_thread(get_store().list_jobs, 1)  # proves the job store answers
    return {"status": "ok"}


@app.post(  # not on the `jobs` router: its guards are called in the route (guard_submission)
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=None,
    responses={
        200: {"description": "the same job_id and spec as before: the job as it is, nothing sent"},
        **answers(400, 401, 403, 409, 413, 415, 503),
    },
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": {"$ref": JOB_SPEC_REF}}}},
        "security": [{"APIKeyHeader": []}],
    },
)
async def create_job(request: Request) -> JSONResponse:
    """Record the job as `queued`, then send `demo/start_job`: its status URL answers at once.

    The body is a JobSpec (every field optional); the cloud path's POST /start reads it alike.
    """
    caller = guard_submission(request)
    try:
        spec = JobSpec.model_validate(claim(parse_json_body(await request.body()) or {}, caller))
        uploads.check_own_input(spec, caller)  # a tenant's input: its own uploads only
        submission = await lifecycle.submit_async(
            get_store(), spec, "local", send_start_event, what=f"send {START_JOB} to Inngest"
        )
    except BodyError as err:
        return JSONResponse({"message": str(err)}, status_code=err.status)
    except ValidationError as err:  # a bad field, or e.g. a bad line in the llm input
        return JSONResponse(invalid_spec(err), status_code=status.HTTP_400_BAD_REQUEST)
    except JobConflictError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(err)) from err
    except (InputUnavailableError, lifecycle.EnqueueError) as err:  # not the caller's fault
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(err)) from err
    job = submission.job
    # The route's URL built directly: url_for walks every route, per request.
    status_url = f"{request.base_url}jobs/{quote(job.job_id, safe='')}"
    body = {"job_id": job.job_id, "status_url": status_url}
    if not submission.enqueued:  # the same job_id and spec as before: nothing new was sent
        return JSONResponse({**body, "status": job.state}, status_code=status.HTTP_200_OK)
    return JSONResponse({**body, "status": "queued"}, status_code=status.HTTP_202_ACCEPTED)


async def send_start_event(work: lifecycle.PlanJob) -> None:
    # start-job plans the job. On the event loop, batched with the other requests' (one POST
    # per batch, not per job).
    spec = work.job.spec.model_dump(mode="json")
    await event_batcher.send(start_job_event(spec, resend=work.again))


async def visible_job(
    job_id: str, caller: Annotated[Caller, Depends(require_api_key)]
) -> JobRecord:
    """The job, if the caller may see it: another tenant's job is a 404, as a missing one."""
    job = await asyncio.to_thread(get_store().get_job, job_id)
    if job is None or not caller.sees(job.spec.tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with job_id {job_id!r}")
    return job


Visible = Annotated[JobRecord, Depends(visible_job)]


@jobs.get("/jobs/{job_id}", response_model=JobStatus, responses=answers(404))
async def get_job(job: Visible) -> JobStatus:
    return get_store().status_of(job)


@jobs.post("/jobs/{job_id}/cancel", response_model=JobStatus, responses=answers(403, 404, 409))
async def cancel_job(job_id: str, _: Visible) -> JobStatus:
    """Chunks not yet started will not run; running ones finish. 409 if the job has ended."""
    try:
        cancelled = await asyncio.to_thread(lifecycle.cancel, get_store(), job_id)
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


@jobs.post(
    "/jobs/{job_id}/retry",
    response_model=JobStatus,
    status_code=status.HTTP_202_ACCEPTED,
    responses=answers(403, 404, 409, 503),
)
async def retry_job(job_id: str, _: Visible) -> JobStatus:
    """Run again only what failed of a job that ended partial or failed (answered items are
    never asked again), then merge its output anew. 409 for a job still running, succeeded,
    cancelled, or retried JOB_MAX_REDRIVES times."""
    store = get_store()
    try:
        retried = await asyncio.to_thread(lifecycle.retry, store, job_id)
    except lifecycle.JobNotRetryableError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(err)) from err
    if retried is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with job_id {job_id!r}")
    try:
        await inngest_client.send(retry_job_event(job_id, retried.redrives))
    except Exception as err:
        reason = f"the retry could not be sent to Inngest: {err}"
        await asyncio.to_thread(lifecycle.retry_unsent, store, job_id, reason)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=reason) from err
    return retried


async def existing_job(job: Visible) -> str:
    # A dependency, so an unknown job is a 404 before the event stream's 200 is sent.
    return job.job_id


def resume_point(last_event_id: Annotated[str | None, Header()] = None) -> int:
    if last_event_id is None:
        return 0
    # Ids are settlement numbers (at most one per chunk): ASCII digits, and not many of them.
    if not re.fullmatch(r"[0-9]{1,10}", last_event_id):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"Last-Event-ID {preview(last_event_id)} is not an id this stream sent "
            "(a number of at most 10 digits)",
        )
    return int(last_event_id)


@jobs.get("/jobs/{job_id}/events", response_class=EventSourceResponse, responses=answers(400, 404))
async def job_progress(
    job_id: Annotated[str, Depends(existing_job)], after: Annotated[int, Depends(resume_point)]
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: `chunk` per settled chunk (resumable with Last-Event-ID), `end` last."""
    poll_s = get_settings().sse_poll_interval_s
    try:
        async for event in job_events(get_store(), job_id, after, poll_s):
            yield ServerSentEvent(event=event.event, data=event.data, id=event.id)
    except Exception as err:
        # After the 200 an exception would cut the stream mid-event: end it with a reason
        # instead; the client reconnects with Last-Event-ID and misses nothing.
        logger.exception("progress stream of job %s stopped", job_id)
        yield ServerSentEvent(event="error", data={"message": f"stream stopped: {err}"})


@jobs.get("/jobs/{job_id}/chunks", response_model=ChunkPage, responses=answers(400, 404))
async def job_chunks(
    job_id: Annotated[str, Depends(existing_job)], query: Annotated[ChunkQuery, Query()]
) -> ChunkPage:
    """The job's chunks in index order, a page at a time (`after` the last index seen)."""
    found = await asyncio.to_thread(
        get_store().chunk_page, job_id, query.state, query.after, query.limit
    )
    return chunk_page(job_id, found, query.limit)


@jobs.get(
    "/jobs/{job_id}/chunks/{chunk_index}/items",
    response_model=ItemPage,
    responses=answers(400, 404),
)
async def chunk_items(
    job_id: Annotated[str, Depends(existing_job)],
    chunk_index: Annotated[QueryInt, Path()],
    query: Annotated[ItemQuery, Query()],
) -> ItemPage:
    """A chunk's answers (llm workload), a page at a time (`after` the last item index seen)."""

    def read() -> ItemPage | str:
        store = get_store()
        missing = no_such_chunk(store.get_job(job_id), job_id, chunk_index)
        if missing:
            return missing
        results = store.item_results(job_id, chunk_index)
        return item_page(job_id, chunk_index, results, query.after, query.limit)

    found = await asyncio.to_thread(read)
    if isinstance(found, str):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=found)
    return found


JOB_FILE_ANSWERS = {
    200: {"content": {NDJSON: {}}, "description": "the file, streamed (JSON Lines)"},
    **answers(404, 409, 503),
}


async def job_file_response(job: JobRecord, which: JobFile) -> StreamingResponse:
    """The job's file, streamed a block at a time (constant memory, whatever its size)."""
    try:
        uri = job_file(job, get_store().status_of(job), which)
        blocks = await asyncio.to_thread(blobs.read_blocks, uri)
    except NoJobFileError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(err)) from err
    except OSError as err:  # S3 not answering, or the file gone from under the job
        logger.warning("%s file of job %s not read: %s", which, job.job_id, err)
        detail = f"job {job.job_id!r}'s {which} file cannot be read now: {err}"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=detail) from err
    return StreamingResponse(blocks, media_type=NDJSON)  # each block read in a worker thread


@jobs.get("/jobs/{job_id}/output", response_class=StreamingResponse, responses=JOB_FILE_ANSWERS)
async def job_output(job: Visible) -> StreamingResponse:
    """An llm job's merged output (`output_uri`), once it has ended; 409 before, or for a job
    that writes none."""
    return await job_file_response(job, "output")


@jobs.get("/jobs/{job_id}/errors", response_class=StreamingResponse, responses=JOB_FILE_ANSWERS)
async def job_errors(job: Visible) -> StreamingResponse:
    """An llm job's failed items, one line each (`errors_uri`); 409 before it ends, or when no
    item failed."""
    return await job_file_response(job, "errors")


@jobs.post(
    "/inputs",
    response_model=uploads.InputSlot,
    responses=answers(400, 403, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": uploads.InputUpload.model_json_schema()}},
        }
    },
)
async def announce_input(
    request: Request, caller: Annotated[Caller, Depends(require_api_key)]
) -> JSONResponse:
    """Where an llm input of this SHA-256 and size goes (your tenant's folder under
    LLM_INPUT_ROOT): the input_uri for a JobSpec, and the PUT that sends it, or `upload: null`
    when that file is there already."""
    try:
        upload = uploads.upload_request(await request.body())
    except uploads.RefusedRequest as err:
        return JSONResponse(err.body, status_code=err.status)
    uri = uploads.local_input_uri(caller, upload.sha256)
    there = await asyncio.to_thread(uploads.size_if_there, uri) == upload.size
    how = None if there else uploads.Upload(url=f"/inputs/{upload.sha256}")
    return JSONResponse(uploads.InputSlot(input_uri=uri, upload=how).model_dump(mode="json"))


# Writes go to disk in blocks this big (in a worker thread): memory stays bounded by it.
UPLOAD_WRITE_BYTES = 2**20


@jobs.put(
    "/inputs/{sha256}",
    status_code=status.HTTP_201_CREATED,
    response_model=uploads.InputKept,
    responses=answers(400, 403, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {NDJSON: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def receive_input(
    sha256: str, request: Request, caller: Annotated[Caller, Depends(require_api_key)]
) -> Response:
    """The input's bytes (the body, streamed): hashed and counted as they come, kept only when
    their SHA-256 is the path's (400) and within LLM_INPUT_MAX_BYTES (413)."""
    try:
        uploads.checked_sha256(sha256)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > get_settings().llm_input_max_bytes:
            raise uploads.too_large()
    except uploads.RefusedRequest as err:
        return JSONResponse(err.body, status_code=err.status)
    uri = uploads.local_input_uri(caller, sha256)
    upload = await asyncio.to_thread(uploads.LocalUpload, uri, sha256)
    try:
        pending = bytearray()
        async for block in request.stream():
            pending += block
            if len(pending) >= UPLOAD_WRITE_BYTES:
                await asyncio.to_thread(upload.add, bytes(pending))
                pending.clear()
        await asyncio.to_thread(upload.add, bytes(pending))
        await asyncio.to_thread(upload.keep)
    except uploads.RefusedRequest as err:
        return JSONResponse(err.body, status_code=err.status)
    except ClientDisconnect:  # nobody to answer; nothing is kept
        return Response(status_code=400)
    finally:
        await asyncio.to_thread(upload.discard)
    kept = uploads.InputKept(input_uri=uri).model_dump(mode="json")
    return JSONResponse(kept, status_code=status.HTTP_201_CREATED)


@jobs.get("/jobs", response_model=list[JobStatus], responses=answers(400))
async def list_jobs(
    query: Annotated[JobListQuery, Query()], caller: Annotated[Caller, Depends(require_api_key)]
) -> list[JobStatus]:
    """The most recent jobs (the caller's tenant's, with a tenant key), newest first: one read
    of `limit` job rows, nothing more."""

    def statuses() -> list[JobStatus]:
        store = get_store()
        return [store.status_of(job) for job in store.list_jobs(query.limit, caller.tenant)]

    return await asyncio.to_thread(statuses)


def openapi() -> dict[str, Any]:
    """The API's schema, with the JobSpec in its components: its common fields and each
    workload's own, registered by then (the dashboard's start form is built from it)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        spec = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update({**spec.pop("$defs", {}), "JobSpec": spec})
        # A request FastAPI cannot validate is answered 400 (unusable_request), never 422; and
        # every error is JSON, whatever the route's own media type (the event stream's).
        error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for operation in (op for ops in schema["paths"].values() for op in ops.values()):
            responses = operation.get("responses", {})
            responses.pop("422", None)
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    response["content"] = error_body
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


app.openapi = openapi  # type: ignore[method-assign]
app.include_router(jobs)
app.include_router(dashboard.page)
# The cloud API's own answers pass through; 502 and 503 are the proxy's (dashboard/routes.py).
app.include_router(
    dashboard.cloud,
    responses={
        202: {"description": "POST /cloud/jobs and /retry: accepted, as the cloud API says"},
        **answers(400, 401, 403, 404, 409, 413, 415, 502, 503),
    },
)
app.mount("/ui/static", dashboard.static_files, name="ui-static")

# What is loaded by now lives as long as the app: frozen, it is left out of the collector's full
# passes, which walked all of it and held every request up at a time under load.
gc.collect()
gc.freeze()
