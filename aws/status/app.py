"""Status Lambda: GET /jobs/{job_id}, the status JSON (one read of the job's row),
GET /jobs/{job_id}/chunks, its chunks a page at a time, GET /jobs/{job_id}/chunks/{index}/items,
a chunk's answers a page at a time, and GET /jobs, the most recent jobs (one query of `limit`
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
from chunking.status import (
    ChunkQuery,
    ItemQuery,
    JobListQuery,
    chunk_page,
    item_page,
    no_such_chunk,
)
from cloud import job_store
from cloud.http import NO_TENANT, caller_of, reply, visible_job

logger = Logger()
app = APIGatewayRestResolver()


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
    caller = caller_of(app.current_event)
    if caller is None:
        return reply(403, NO_TENANT)
    store = job_store()
    job = visible_job(store, job_id, caller)
    if job is None:
        return reply(404, {"message": f"no job with job_id {job_id!r}"})
    return Response(200, content_types.APPLICATION_JSON, store.status_of(job).model_dump_json())


@app.get("/jobs/<job_id>/chunks")
def get_chunks(job_id: str) -> Response[str]:
    logger.append_keys(job_id=job_id)
    try:
        query = ChunkQuery.model_validate(app.current_event.query_string_parameters or {})
    except ValidationError as err:
        return reply(400, invalid_query(err))
    caller = caller_of(app.current_event)
    if caller is None:
        return reply(403, NO_TENANT)
    store = job_store()
    if visible_job(store, job_id, caller) is None:
        return reply(404, {"message": f"no job with job_id {job_id!r}"})
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


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
