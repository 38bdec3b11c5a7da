"""Checked structured answers (`response_format`, issue 24 point 5) on the local path: POST
/jobs, run by the stand-in executor over the SDK's protocol, the test server answering JSON
for the schema it is sent. An answer that misses the schema is asked once more (realtime at
once, in batch mode in the chunk's next round), then it is the item's failure."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.executor import StandInExecutor, serving
from tests.functions.test_llm_batch_local import batches_of, wait_until_ended
from tests.llm_server import FakeModelServer
from tests.support import FakeInngestApi

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "words": {"type": "integer"}},
    "required": ["label", "words"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "labelled", "schema": SCHEMA}}
MISSED = "response did not match response_format: 'label' is a required property"


@pytest.fixture
def executor(
    model: FakeModelServer,
    api: httpx.Client,
    fake_inngest: FakeInngestApi,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[StandInExecutor]:
    from chunking.settings import get_settings

    monkeypatch.setenv("LLM_BATCH_POLL_MIN_S", "0.3")
    monkeypatch.setenv("LLM_BATCH_POLL_MAX_S", "1")
    get_settings.cache_clear()
    with serving(api, fake_inngest, workers=8) as running:
        yield running


def attempts_kept(db: Path, job_id: str) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, attempts FROM items WHERE job_id = ?", (job_id,))
        return dict(rows.fetchall())


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_an_answer_missing_its_schema_is_asked_once_more_then_fails_with_why(
    api: httpx.Client,
    executor: StandInExecutor,
    model: FakeModelServer,
    isolated_store: Path,
    mode: str,
) -> None:
    prompts = {
        "good": f"good {mode}",
        "once": f"[badjsonx1] once {mode}",
        "never": f"[badjson] never {mode}",
    }
    items = [{"id": key, "prompt": prompt} for key, prompt in prompts.items()]
    body = {"workload": "llm", "items": items, "mode": mode, "response_format": RESPONSE_FORMAT}
    accepted = api.post("/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    status = wait_until_ended(api, job_id)

    assert (status["status"], status["items_processed"]) == ("partial", 3)
    assert status["usage"]["items_failed"] == 1
    # Asked twice at most: once for a good answer, twice for the others (the server counts).
    asked = model.calls if mode == "realtime" else model.batch.asked
    assert [asked[prompt] for prompt in prompts.values()] == [1, 2, 2]
    lines = {
        m["id"]: m for m in map(json.loads, Path(status["output_uri"]).read_text().splitlines())
    }
    good, once, never = (lines[key] for key in prompts)
    assert good["parsed"] == {"label": f"echo: {prompts['good']}", "words": 2}
    assert json.loads(good["output"]) == good["parsed"]
    assert once["parsed"] == {"label": f"echo: {prompts['once']}", "words": 3}
    assert (never["output"], never["error"], "parsed" in never) == (None, MISSED, False)
    # Both asks' tokens are counted: the server's usage is words and words + 1 per ask.
    assert never["usage"] == {"prompt_tokens": 2 * 3, "completion_tokens": 2 * 4}
    assert once["usage"] == {"prompt_tokens": 2 * 3, "completion_tokens": 2 * 4}
    tokens = sum(
        m["usage"]["prompt_tokens"] + m["usage"]["completion_tokens"] for m in lines.values()
    )
    assert status["usage"]["prompt_tokens"] + status["usage"]["completion_tokens"] == tokens
    assert attempts_kept(isolated_store, job_id) == {"good": 1, "once": 2, "never": 2}
    [failed] = map(json.loads, Path(status["errors_uri"]).read_text().splitlines())
    assert failed == {"id": "never", "input": items[2], "error": MISSED, "attempts": 2}
    if mode == "batch":  # the misses went in the chunk's second round, alone
        [first, second] = batches_of(model, job_id)
        assert (len(first.requests), len(second.requests)) == (3, 2)


def test_a_batch_request_carries_the_response_format_as_realtime_sends_it() -> None:
    from workloads.llm.batch import request_line
    from workloads.llm.input import Item
    from workloads.llm.structured import ResponseFormat

    response_format = ResponseFormat.model_validate(RESPONSE_FORMAT)
    line = json.loads(request_line(Item(0, "a", "p"), "m", None, response_format))
    assert line["body"]["response_format"] == RESPONSE_FORMAT


@pytest.mark.parametrize(
    ("response_format", "words"),
    [
        ({**RESPONSE_FORMAT, "json_schema": {"name": "x", "schema": {"type": "objekt"}}},
         "not a valid JSON schema"),
        ({**RESPONSE_FORMAT, "json_schema": {"name": "no spaces", "schema": SCHEMA}},
         "should match pattern"),
        ({"type": "json_object"}, "'json_schema'"),
        ({**RESPONSE_FORMAT, "json_schema": {"name": "x"}}, "Field required"),
    ],
)  # fmt: skip
def test_a_bad_response_format_is_a_400_naming_it(
    api: httpx.Client, model: FakeModelServer, response_format: dict[str, Any], words: str
) -> None:
    body = {"workload": "llm", "items": [{"id": "a", "prompt": "p"}]}
    response = api.post("/jobs", json={**body, "response_format": response_format})
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert all(e["field"].startswith("response_format") for e in errors), errors
    assert any(words in e["message"] for e in errors), errors
    assert api.get("/jobs").json() == []
