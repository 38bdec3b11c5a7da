"""GET /jobs on both APIs: the most recent jobs first, `limit` of them, the same 400s."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aws.local.lambda_events import lambda_context
from chunking.spec import JobSpec
from chunking.store import JobStore
from tests.aws.events import list_jobs

Fetch = Callable[..., tuple[int, Any]]


def create_three(store: JobStore, path: Any) -> None:
    for name in ("job-a", "job-b", "job-c"):
        store.create_job(name, JobSpec(total_items=4, chunk_size=2), path)
        time.sleep(0.002)  # distinct creation times: the order is by created_at


@pytest.fixture(params=["local", "cloud"])
def fetch(request: pytest.FixtureRequest) -> Fetch:
    if request.param == "local":
        from functions.deps import get_store

        api: httpx.Client = request.getfixturevalue("api")
        create_three(get_store(), "local")

        def local(**query: str) -> tuple[int, Any]:
            response = api.get("/jobs", params=query)
            return response.status_code, response.json()

        return local
    request.getfixturevalue("stack")
    from aws.status.app import lambda_handler
    from cloud import job_store

    create_three(job_store(), "cloud")

    def cloud(**query: str) -> tuple[int, Any]:
        response = lambda_handler(list_jobs(**query), lambda_context())
        return response["statusCode"], json.loads(response["body"])

    return cloud


def test_the_most_recent_jobs_come_first_with_their_status(fetch: Fetch) -> None:
    code, jobs = fetch()
    assert code == 200
    assert [job["job_id"] for job in jobs] == ["job-c", "job-b", "job-a"]
    assert {job["status"] for job in jobs} == {"queued"}
    assert {job["total_chunks"] for job in jobs} == {2}
    code, jobs = fetch(limit="2")
    assert code == 200 and [job["job_id"] for job in jobs] == ["job-c", "job-b"]


@pytest.mark.parametrize("limit", ["0", "201", "many"])
def test_a_bad_limit_is_400_naming_it(fetch: Fetch, limit: str) -> None:
    code, body = fetch(limit=limit)
    assert code == 400
    assert "limit" in body["message"]
