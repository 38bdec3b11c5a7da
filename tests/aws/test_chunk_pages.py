"""GET /jobs/{job_id}/chunks on both APIs: the same pages, the same 400s and 404s."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from aws.local.lambda_events import lambda_context
from aws.local.resources import LocalStack
from chunking.spec import JobSpec
from chunking.store import JobStore
from tests.aws.events import get_chunks

Fetch = Callable[..., tuple[int, dict[str, Any]]]


def settle_some(store: JobStore, job_id: str, path: Any) -> None:
    store.create_job(job_id, JobSpec(total_items=12, chunk_size=1), path)
    assert store.start_job(job_id)
    for index in range(10):
        store.begin_attempt(job_id, index)
        if index == 1:  # a run that failed and was retried, then the one that settled
            store.end_attempt(job_id, index, "TransientError: flaky")
            store.begin_attempt(job_id, index)
        if index < 8:
            ok = index % 3 != 0
            store.settle_chunk(job_id, index, succeeded=ok, items=1, latency_ms=5.0,
                               error=None if ok else f"chunk {index} broke")  # fmt: skip


@pytest.fixture(params=["local", "cloud"])
def fetch(request: pytest.FixtureRequest) -> Fetch:
    if request.param == "local":
        from functions.deps import get_store

        api: httpx.Client = request.getfixturevalue("api")
        settle_some(get_store(), "job-p", "local")

        def local(job_id: str, **query: str) -> tuple[int, dict[str, Any]]:
            response = api.get(f"/jobs/{job_id}/chunks", params=query)
            return response.status_code, response.json()

        return local
    request.getfixturevalue("stack")
    from aws.status.app import lambda_handler
    from cloud import job_store

    stack: LocalStack = request.getfixturevalue("stack")
    assert stack.table_name
    settle_some(job_store(), "job-p", "cloud")

    def cloud(job_id: str, **query: str) -> tuple[int, dict[str, Any]]:
        response = lambda_handler(get_chunks(job_id, **query), lambda_context())
        return response["statusCode"], json.loads(response["body"])

    return cloud


def test_pages_go_through_every_chunk_in_index_order(fetch: Fetch) -> None:
    code, page = fetch("job-p", limit="4")
    assert code == 200 and page["job_id"] == "job-p"
    assert [c["index"] for c in page["chunks"]] == [0, 1, 2, 3] and page["next_after"] == 3
    seen = [c["index"] for c in page["chunks"]]
    while page["next_after"] is not None:
        _, page = fetch("job-p", limit="4", after=str(page["next_after"]))
        seen += [c["index"] for c in page["chunks"]]
    assert seen == list(range(10))
    first = fetch("job-p", limit="1")[1]["chunks"][0]
    assert [span["outcome"] for span in first.pop("timeline")] == ["failed"]
    assert first == {
        "index": 0, "state": "failed", "attempts": 1, "continuations": 0, "items": 0,
        "latency_ms": 5.0, "error": "chunk 0 broke", "prompt_tokens": 0,
        "completion_tokens": 0, "items_failed": 0, "batch": None,
    }  # fmt: skip


def test_each_chunk_shows_its_runs_with_their_times_and_outcomes(fetch: Fetch) -> None:
    _, page = fetch("job-p")
    chunks = {c["index"]: c for c in page["chunks"]}
    retried, settled = chunks[1]["timeline"]
    assert (retried["attempt"], retried["outcome"], retried["error"]) == (
        1, "retried", "TransientError: flaky",
    )  # fmt: skip
    assert (settled["attempt"], settled["outcome"], settled["error"]) == (2, "succeeded", None)
    moments = [retried["started_at"], retried["ended_at"], settled["started_at"],
               settled["ended_at"]]  # fmt: skip
    times = [datetime.fromisoformat(m) for m in moments]  # (as text, .000 is left out)
    assert times == sorted(times)
    [running] = chunks[9]["timeline"]
    assert (running["outcome"], running["ended_at"]) == ("running", None)
    assert chunks[0]["timeline"][0]["error"] == "chunk 0 broke"


def test_a_state_picks_its_chunks(fetch: Fetch) -> None:
    _, failed = fetch("job-p", state="failed")
    assert [c["index"] for c in failed["chunks"]] == [0, 3, 6] and failed["next_after"] is None
    _, running = fetch("job-p", state="running")
    assert [c["index"] for c in running["chunks"]] == [8, 9]
    _, succeeded = fetch("job-p", state="succeeded", after="4", limit="2")
    assert [c["index"] for c in succeeded["chunks"]] == [5, 7]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "lost"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"after": "-2"}, "after"),
        ({"after": "x"}, "after"),
        ({"color": "red"}, "color"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_parameter(
    fetch: Fetch, query: dict[str, str], field: str
) -> None:
    code, body = fetch("job-p", **query)
    assert code == 400, body
    assert field in body["message"]


def test_an_unknown_job_is_a_404(fetch: Fetch) -> None:
    code, body = fetch("nope")
    assert code == 404 and "nope" in body["message"]
