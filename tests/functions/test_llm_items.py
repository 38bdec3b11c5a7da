"""Prompts in the request (`items`, issue 24 point 4) on the local path: POST /jobs with the
items themselves, run by the stand-in executor over the SDK's protocol; kept as a JSONL input
so every chunk reads only its own lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.executor import StandInExecutor, ended
from tests.llm_server import FakeModelServer


def test_one_prompt_in_the_request_is_a_job(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer
) -> None:
    body = {"workload": "llm", "job_id": "one-prompt", "items": [{"id": "q", "prompt": "hello"}]}
    accepted = api.post("/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    status = ended(api, "one-prompt")
    assert (status["status"], status["total_items"], status["items_processed"]) == (
        "succeeded", 1, 1,
    )  # fmt: skip
    [line] = Path(status["output_uri"]).read_text().splitlines()
    assert json.loads(line)["output"] == "echo: hello"
    again = api.post("/jobs", json=body)  # the same items again: the same job
    assert again.status_code == 200 and again.json()["job_id"] == "one-prompt"
    assert model.calls["hello"] == 1


def test_many_items_in_chunks_each_read_from_the_kept_input(
    api: httpx.Client, executor: StandInExecutor, tmp_path: Path
) -> None:
    items = [{"id": f"t{i}", "text": f"ticket {i}"} for i in range(7)]
    body = {"workload": "llm", "items": items, "chunk_size": 3, "prompt_template": "Q: {text}"}
    accepted = api.post("/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    status = ended(api, accepted.json()["job_id"])
    assert (status["status"], status["total_chunks"], status["items_processed"]) == (
        "succeeded", 3, 7,
    )  # fmt: skip
    lines = [json.loads(line) for line in Path(status["output_uri"]).read_text().splitlines()]
    assert [m["output"] for m in lines] == [f"echo: Q: ticket {i}" for i in range(7)]
    [kept] = (tmp_path / "items").iterdir()  # the input, under LLM_INPUT_ROOT
    assert len(kept.read_text().splitlines()) == 7


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"items": [{"id": "a"}]}, "a prompt or a text"),
        ({"items": [{"id": "a", "prompt": "p", "text": "t"}]}, "a prompt or a text"),
        ({"items": []}, "at least 1 item"),
        ({"items": [{"id": "a", "prompt": "p"}], "input_uri": "x.jsonl"}, "not both"),
        ({}, "or items"),
    ],
)
def test_items_are_checked_by_name(
    api: httpx.Client, model: FakeModelServer, body: dict[str, Any], words: str
) -> None:
    response = api.post("/jobs", json={"workload": "llm", **body})
    assert response.status_code == 400, response.text
    assert any(words in e["message"] for e in response.json()["errors"]), response.json()
