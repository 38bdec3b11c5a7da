"""The cloud API's answers: what the Lambda handlers behind API Gateway reply, in one shape."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from chunking.status import JobRecord
from chunking.store import JobStore
from chunking.tenancy import Caller, caller_of_key_id


def reply(status: int, body: dict[str, Any] | list[Any]) -> Response[str]:
    """A JSON answer: `body` as json.dumps writes it."""
    return Response(status, content_types.APPLICATION_JSON, json.dumps(body))


def caller_of(event: APIGatewayProxyEvent) -> Caller | None:
    """Who is asking: the tenant of the API key API Gateway let the request in with (its id,
    mapped by API_KEY_TENANTS); None when tenant keys are on and this key is nobody's."""
    return caller_of_key_id(event.request_context.identity.api_key_id)


NO_TENANT = {"message": "this API key belongs to no tenant: map its id in API_KEY_TENANTS"}


def visible_job(store: JobStore, job_id: str, caller: Caller) -> JobRecord | None:
    """The job, if the caller may see it (another tenant's is as missing: a 404)."""
    job = store.get_job(job_id)
    return job if job is not None and caller.sees(job.spec.tenant) else None


def callers_job(
    event: APIGatewayProxyEvent, store: JobStore, job_id: str
) -> JobRecord | Response[str]:
    """The job the request is about, or the answer refusing it: a 403 for a key that is no
    tenant's, a 404 for a job the caller may not see (another tenant's, as a missing one)."""
    caller = caller_of(event)
    if caller is None:
        return reply(403, NO_TENANT)
    job = visible_job(store, job_id, caller)
    if job is None:
        return reply(404, {"message": f"no job with job_id {job_id!r}"})
    return job
