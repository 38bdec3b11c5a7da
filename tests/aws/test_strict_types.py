"""Numbers and booleans are strict on both APIs (issue 25): in a JobSpec a bool is not an int
and a string is not a number; in a query only plain decimal digits are a number. Each refusal
is the 400 naming its field, and what was valid before still is."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from aws.local.lambda_events import api_event, lambda_context, post_start
from chunking.spec import JobSpec
from tests.aws.events import get_chunks, list_jobs

Call = Callable[[str, Any], tuple[int, Any]]

LLM = {"workload": "llm", "items": [{"id": "a", "prompt": "x"}]}
SCHEMA = {"name": "answer", "schema": {"type": "object"}}


@pytest.fixture(params=["local", "cloud"])
def call(request: pytest.FixtureRequest) -> Call:
    """(what, argument) -> (status, body): `start` a JobSpec, or `jobs`, `chunks`, `items` with
    a query, on one of the two APIs."""
    if request.param == "local":
        from fastapi.testclient import TestClient

        from functions.deps import get_store
        from main import app

        request.getfixturevalue("fake_inngest")
        get_store().create_job("job-s", JobSpec(total_items=4, chunk_size=2), "local")
        client = TestClient(app, base_url="http://127.0.0.1")
        urls = {
            "jobs": "/jobs",
            "chunks": "/jobs/job-s/chunks",
            "items": "/jobs/job-s/chunks/0/items",
        }

        def local(what: str, arg: Any) -> tuple[int, Any]:
            if what == "start":
                response = client.post(
                    "/jobs", content=json.dumps(arg), headers={"Content-Type": "application/json"}
                )
            else:
                response = client.get(urls[what], params=arg)
            return response.status_code, response.json()

        return local
    request.getfixturevalue("stack")
    from aws.starter.app import lambda_handler as starter
    from aws.status.app import lambda_handler as status
    from cloud import job_store

    job_store().create_job("job-s", JobSpec(total_items=4, chunk_size=2), "cloud")

    def items(**query: str) -> dict[str, Any]:
        return api_event(
            "GET",
            "/jobs/job-s/chunks/0/items",
            resource="/jobs/{job_id}/chunks/{chunk_index}/items",
            path_parameters={"job_id": "job-s", "chunk_index": "0"},
            query=list(query.items()),
        )

    def cloud(what: str, arg: Any) -> tuple[int, Any]:
        if what == "start":
            response = starter(post_start(json.dumps(arg)), lambda_context())
        else:
            if what == "jobs":
                event = list_jobs(**arg)
            elif what == "chunks":
                event = get_chunks("job-s", **arg)
            else:
                event = items(**arg)
            response = status(event, lambda_context())
        return response["statusCode"], json.loads(response["body"])

    return cloud


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"total_items": True}, "total_items"),
        ({"total_items": "1_0"}, "total_items"),
        ({"total_items": "10"}, "total_items"),
        ({"chunk_size": 5.0}, "chunk_size"),
        ({"item_delay_ms": "5"}, "item_delay_ms"),
        ({"item_delay_ms": False}, "item_delay_ms"),
        ({"fail_chunks": [True]}, "fail_chunks"),
        ({"fail_chunks": ["1"]}, "fail_chunks"),
        ({"flaky_chunks": {"1": True}}, "flaky_chunks"),
        ({"flaky_chunks": {"0_1": 2}}, "flaky_chunks"),
        ({"flaky_chunks": {"+1": 2}}, "flaky_chunks"),
        ({"flaky_chunks": {" 1": 2}}, "flaky_chunks"),
        ({"max_failed_items": True}, "max_failed_items"),
        ({**LLM, "max_tokens": "5"}, "max_tokens"),
        ({**LLM, "max_tokens": True}, "max_tokens"),
        ({**LLM, "response_format": {"type": "json_schema",
                                     "json_schema": {**SCHEMA, "strict": "yes"}}},
         "response_format.json_schema.strict"),
    ],
)  # fmt: skip
def test_a_bool_or_a_string_is_no_number_in_a_jobspec(call: Call, spec: Any, field: str) -> None:
    code, body = call("start", spec)
    assert code == 400, body
    assert body["message"].startswith("invalid JobSpec")
    assert any(e["field"].startswith(field) for e in body["errors"]), body


def test_plain_numbers_and_booleans_still_make_a_job(
    call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunking.settings import get_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # an llm job needs a model to call
    get_settings.cache_clear()
    spec = {"total_items": 20, "chunk_size": 5, "flaky_chunks": {"1": 2}, "fail_chunks": [3]}
    code, body = call("start", spec)
    assert code == 202, body
    llm = {
        **LLM,
        "max_tokens": 5,
        "response_format": {"type": "json_schema", "json_schema": {**SCHEMA, "strict": True}},
    }
    code, body = call("start", llm)
    assert code == 202, body


@pytest.mark.parametrize("what", ["jobs", "chunks", "items"])
@pytest.mark.parametrize("value", ["1_0", "+5", " 5", "5 ", "5.0", "1e1", "0x5", "\u0665", ""])
def test_a_query_limit_is_plain_decimal_digits(call: Call, what: str, value: str) -> None:
    code, body = call(what, {"limit": value})
    assert code == 400, body
    assert [e["field"].split(".")[-1] for e in body["errors"]] == ["limit"], body


@pytest.mark.parametrize("what", ["chunks", "items"])
@pytest.mark.parametrize("value", ["-1_0", "+1", "- 1", "--1", "1.0"])
def test_a_query_after_is_plain_decimal_digits(call: Call, what: str, value: str) -> None:
    code, body = call(what, {"after": value})
    assert code == 400, body
    assert [e["field"].split(".")[-1] for e in body["errors"]] == ["after"], body


@pytest.mark.parametrize("what", ["chunks", "items"])
def test_plain_decimal_queries_still_answer(call: Call, what: str) -> None:
    code, body = call(what, {"after": "-1", "limit": "5"})
    assert code == 200, body
    code, body = call("jobs", {"limit": "007"})
    assert code == 200 and [job["job_id"] for job in body] == ["job-s"], body
