"""Status Lambda: GET /jobs/{job_id}, the status JSON (one read of the job's row),
GET /jobs/{job_id}/chunks, its chunks a page at a time, GET /jobs/{job_id}/chunks/{index}/items,
a chunk's answers a page at a time, GET /jobs/{job_id}/output and /errors, a redirect to a
presigned S3 URL of an llm job's file, and GET /jobs, the most recent jobs (one query of `limit`
job rows); the same keys and limits as the local path's."""

from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

import workloads  # noqa: F401 - registers the workloads with the core, as every entrypoint does
from chunking.api_errors import invalid_field, invalid_query
from chunking.job_files import JobFile, NoJobFileError, job_file
from chunking.status import (
    ChunkQuery,
    ItemQuery,
    JobListQuery,
    chunk_page,
    item_page,
    no_such_chunk,
)
from cloud import job_store
from cloud.http import NO_TENANT, caller_of, callers_job, reply, visible_job
from workloads.llm import blobs

logger = Logger()
app = APIGatewayRestResolver()
# A job's file is fetched from S3 itself: API Gateway carries at most 10 MB, and Lambda 6 MB.
DOWNLOAD_URL_EXPIRES_S = 900


@app.get("/jobs")
def list_jobs() -> Response[str]:
    caller = caller_of(app.current_event)
    if caller is None:
        return reply(403, NO_TENANT)
    try:
        query = JobListQuery.model_validate(app.current_event.query_string_parameters or {})
    except ValidationError as err:
        return reply(400, invalid_query(err))
    store = job_store()
    found = store.list_jobs(query.limit, caller.tenant)
    return reply(200, [store.status_of(job).model_dump(mode="json") for job in found])


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response[str]:
    logger.append_keys(job_id=job_id)
    store = job_store()
    job = callers_job(app.current_event, store, job_id)
    if isinstance(job, Response):
        return job
    return Response(200, content_types.APPLICATION_JSON, store.status_of(job).model_dump_json())


@app.get("/jobs/<job_id>/chunks")
def get_chunks(job_id: str) -> Response[str]:
    logger.append_keys(job_id=job_id)
    try:
        query = ChunkQuery.model_validate(app.current_event.query_string_parameters or {})
    except ValidationError as err:
        return reply(400, invalid_query(err))
    store = job_store()
    if isinstance(refused := callers_job(app.current_event, store, job_id), Response):
        return refused
    found = store.chunk_page(job_id, query.state, query.after, query.limit)
    return Response(
        200,
        content_types.APPLICATION_JSON,
        chunk_page(job_id, found, query.limit).model_dump_json(),
    )


@app.get("/jobs/<job_id>/chunks/<chunk_index>/items")
def get_items(job_id: str, chunk_index: str) -> Response[str]:
    logger.append_keys(job_id=job_id)
    try:
        query = ItemQuery.model_validate(app.current_event.query_string_parameters or {})
    except ValidationError as err:
        return reply(400, invalid_query(err))
    # The route's pattern takes any segment: as on the local path, a whole number or a 400.
    if not re.fullmatch(r"-?[0-9]{1,10}", chunk_index):
        return reply(400, invalid_field("chunk_index", "Input should be a valid integer"))
    caller = caller_of(app.current_event)
    if caller is None:
        return reply(403, NO_TENANT)
    store = job_store()
    index = int(chunk_index)
    missing = no_such_chunk(visible_job(store, job_id, caller), job_id, index)
    if missing:
        return reply(404, {"message": missing})
    page = item_page(job_id, index, store.item_results(job_id, index), query.after, query.limit)
    return Response(200, content_types.APPLICATION_JSON, page.model_dump_json())


@app.get("/jobs/<job_id>/output")
def get_output(job_id: str) -> Response[str]:
    return job_file_redirect(job_id, "output")


@app.get("/jobs/<job_id>/errors")
def get_errors(job_id: str) -> Response[str]:
    return job_file_redirect(job_id, "errors")


def job_file_redirect(job_id: str, which: JobFile) -> Response[str]:
    """307 to a presigned GET of the job's file (no API key: the URL is the permission), for
    DOWNLOAD_URL_EXPIRES_S; 409 when the job has no such file. 307: this very GET, elsewhere,
    for now (the next one may get another URL)."""
    logger.append_keys(job_id=job_id)
    store = job_store()
    job = callers_job(app.current_event, store, job_id)
    if isinstance(job, Response):
        return job
    try:
        uri = job_file(job, store.status_of(job), which)
    except NoJobFileError as err:
        return reply(409, {"message": str(err)})
    url = blobs.presigned_get(uri, DOWNLOAD_URL_EXPIRES_S)
    redirect = reply(307, {"url": url, "expires_in_s": DOWNLOAD_URL_EXPIRES_S})
    redirect.headers["Location"] = url
    return redirect


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
