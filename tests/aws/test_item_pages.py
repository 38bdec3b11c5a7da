"""GET /jobs/{job_id}/chunks/{index}/items on both APIs: a chunk's answers, the same pages, the
same 400s and 404s (the route through the emulator's API Gateway: test_llm_emulated.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from aws.local.lambda_events import api_event, lambda_context
from chunking.spec import JobSpec
from chunking.status import ItemResult
from chunking.store import JobStore

Fetch = Callable[..., tuple[int, dict[str, Any]]]


def answer_some(store: JobStore, job_id: str, path: Any) -> None:
    """Three chunks of four items: chunk 1 has its first three items' results, one failed."""
    store.create_job(job_id, JobSpec(total_items=12, chunk_size=4), path)
    assert store.start_job(job_id)
    store.record_items(job_id, [
        ItemResult(index=4, chunk_index=1, id="a", output="answer a", prompt_tokens=3,
                   completion_tokens=5, latency_ms=12.5),
        ItemResult(index=5, chunk_index=1, id="b", error="BadRequest: refused"),
        ItemResult(index=6, chunk_index=1, id="c", output_uri="s3://bucket/outputs/c.txt"),
        ItemResult(index=0, chunk_index=0, id="z", output="in another chunk"),
    ])  # fmt: skip


@pytest.fixture(params=["local", "cloud"])
def fetch(request: pytest.FixtureRequest) -> Fetch:
    if request.param == "local":
        from fastapi.testclient import TestClient

        from functions.deps import get_store
        from main import app

        answer_some(get_store(), "job-i", "local")
        client = TestClient(app, base_url="http://127.0.0.1")

        def local(job_id: str, index: str, **query: str) -> tuple[int, dict[str, Any]]:
            response = client.get(f"/jobs/{job_id}/chunks/{index}/items", params=query)
            return response.status_code, response.json()

        return local
    request.getfixturevalue("stack")
    from aws.status.app import lambda_handler
    from cloud import job_store

    answer_some(job_store(), "job-i", "cloud")

    def cloud(job_id: str, index: str, **query: str) -> tuple[int, dict[str, Any]]:
        event = api_event(
            "GET",
            f"/jobs/{job_id}/chunks/{index}/items",
            resource="/jobs/{job_id}/chunks/{chunk_index}/items",
            path_parameters={"job_id": job_id, "chunk_index": index},
            query=list(query.items()),
        )
        response = lambda_handler(event, lambda_context())
        return response["statusCode"], json.loads(response["body"])

    return cloud


def test_a_chunks_answers_come_in_item_order_a_page_at_a_time(fetch: Fetch) -> None:
    code, page = fetch("job-i", "1")
    assert code == 200, page
    assert (page["job_id"], page["chunk_index"], page["next_after"]) == ("job-i", 1, None)
    first, failed, elsewhere = page["items"]
    assert first == {
        "index": 4, "id": "a", "output": "answer a", "output_uri": None, "error": None,
        "prompt_tokens": 3, "completion_tokens": 5, "latency_ms": 12.5,
    }  # fmt: skip
    assert (failed["id"], failed["output"], failed["error"]) == ("b", None, "BadRequest: refused")
    assert (elsewhere["output"], elsewhere["output_uri"]) == (None, "s3://bucket/outputs/c.txt")
    _, one = fetch("job-i", "1", limit="2")
    assert [i["index"] for i in one["items"]] == [4, 5] and one["next_after"] == 5
    _, rest = fetch("job-i", "1", limit="2", after="5")
    assert [i["index"] for i in rest["items"]] == [6] and rest["next_after"] is None
    # A chunk with no answers yet is an empty page, not an error.
    assert fetch("job-i", "2") == (200, {"job_id": "job-i", "chunk_index": 2, "items": [],
                                         "next_after": None})  # fmt: skip


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "2.5"}, "limit"),
        ({"after": "-2"}, "after"),
        ({"after": "x"}, "after"),
        ({"state": "failed"}, "state"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_parameter(
    fetch: Fetch, query: dict[str, str], field: str
) -> None:
    code, body = fetch("job-i", "1", **query)
    assert code == 400, body
    assert field in body["message"]


def test_a_chunk_index_that_is_no_number_is_a_400(fetch: Fetch) -> None:
    code, body = fetch("job-i", "one")
    assert code == 400 and "chunk_index" in body["message"]


@pytest.mark.parametrize("index", ["3", "-1", "99999"])
def test_a_chunk_out_of_range_is_a_404(fetch: Fetch, index: str) -> None:
    code, body = fetch("job-i", index)
    assert code == 404 and f"no chunk {index}" in body["message"]


def test_an_unknown_job_is_a_404(fetch: Fetch) -> None:
    code, body = fetch("nope", "0")
    assert code == 404 and "nope" in body["message"]
