"""API Gateway events for the status routes, as the tests send them to the handlers directly.

Only the tests build these (the emulator builds its events from the request it serves, with
`aws.local.lambda_events.api_event`). Loaded by file path in built_artifact_check.py, so it
imports nothing from `tests`.
"""

from __future__ import annotations

from typing import Any

from aws.local.lambda_events import api_event


def get_status(job_id: str) -> dict[str, Any]:
    return api_event(
        "GET", f"/jobs/{job_id}", resource="/jobs/{job_id}", path_parameters={"job_id": job_id}
    )


def get_chunks(job_id: str, **query: str) -> dict[str, Any]:
    return api_event(
        "GET",
        f"/jobs/{job_id}/chunks",
        resource="/jobs/{job_id}/chunks",
        path_parameters={"job_id": job_id},
        query=list(query.items()),
    )


def list_jobs(**query: str) -> dict[str, Any]:
    return api_event("GET", "/jobs", resource="/jobs", query=list(query.items()))
