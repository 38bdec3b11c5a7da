"""Status Lambda: GET /jobs/{job_id}, the status JSON (one read of the job's row),
GET /jobs/{job_id}/chunks, its chunks a page at a time, and GET /jobs, the most recent jobs
(one query of `limit` job rows); the same keys and limits as the local path's."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

import workloads  # noqa: F401 - registers the workloads with the core, as every entrypoint does
from chunking.api_errors import invalid_query
from chunking.status import ChunkQuery, JobListQuery, chunk_page
from cloud import job_store
from cloud.http import reply

logger = Logger()
app = APIGatewayRestResolver()


@app.get("/jobs")
def list_jobs() -> Response[str]:
    try:
        query = JobListQuery.model_validate(app.current_event.query_string_parameters or {})
    except ValidationError as err:
        return reply(400, invalid_query(err))
    store = job_store()
    jobs = [store.status_of(job).model_dump(mode="json") for job in store.list_jobs(query.limit)]
    return reply(200, jobs)


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response[str]:
    logger.append_keys(job_id=job_id)
    status = job_store().status(job_id)
    if status is None:
        return reply(404, {"message": f"no job with job_id {job_id!r}"})
    return Response(200, content_types.APPLICATION_JSON, status.model_dump_json())


@app.get("/jobs/<job_id>/chunks")
def get_chunks(job_id: str) -> Response[str]:
    logger.append_keys(job_id=job_id)
    try:
        query = ChunkQuery.model_validate(app.current_event.query_string_parameters or {})
    except ValidationError as err:
        return reply(400, invalid_query(err))
    store = job_store()
    if store.get_job(job_id) is None:
        return reply(404, {"message": f"no job with job_id {job_id!r}"})
    found = store.chunk_page(job_id, query.state, query.after, query.limit)
    return Response(
        200,
        content_types.APPLICATION_JSON,
        chunk_page(job_id, found, query.limit).model_dump_json(),
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
