"""Status Lambda, GET /jobs/{job_id}: the status JSON, with the same keys as the local path."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

import workloads  # noqa: F401 - registers the workloads with the core, as every entrypoint does
from cloud import job_store

logger = Logger()
app = APIGatewayRestResolver()


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response[str]:
    logger.append_keys(job_id=job_id)
    status = job_store().status(job_id)
    if status is None:
        body = json.dumps({"message": f"no job with job_id {job_id!r}"})
        return Response(404, content_types.APPLICATION_JSON, body)
    return Response(200, content_types.APPLICATION_JSON, status.model_dump_json())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
