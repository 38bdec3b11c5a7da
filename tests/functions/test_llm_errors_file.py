"""A file of what failed (`errors_uri`, issue 24 point 6) on the local path: POST /jobs, run by
the stand-in executor over the SDK's protocol. One line per failed item, in input order, with
its input line as it was, its error and its attempts; null when nothing failed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.executor import StandInExecutor
from tests.functions.test_llm_batch_local import wait_until_ended, write_input
from tests.llm_server import FakeModelServer

# Chunks of 2: the first answers one item and fails one, the second fails one (refused) and
# answers one, the third fails as a whole (the endpoint refuses the key), never answered.
PROMPTS = ["fine", "[400-context] long", "[refuse] rude", "also fine", "[401] a", "[401] b"]
CONTEXT = "400 context_length_exceeded: This model's maximum context length is 8192 tokens."
REFUSED = "refused by the content policy (finish_reason=content_filter)"


def test_the_errors_file_lists_exactly_the_failed_items_with_their_input_lines(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer, tmp_path: Path
) -> None:
    lines = [{"id": f"e{i}", "prompt": p, "meta": {"n": i}} for i, p in enumerate(PROMPTS)]
    uri = write_input(tmp_path / "some-fail.jsonl", lines)
    accepted = api.post("/jobs", json={"workload": "llm", "input_uri": uri, "chunk_size": 2})
    assert accepted.status_code == 202, accepted.text
    status = wait_until_ended(api, accepted.json()["job_id"])

    assert (status["status"], status["chunks_failed"]) == ("partial", 1)
    [chunk_failure] = status["failed_chunks"]
    errors = [json.loads(line) for line in Path(status["errors_uri"]).read_text().splitlines()]
    assert errors == [
        {"id": "e1", "input": lines[1], "error": CONTEXT, "attempts": 1},
        {"id": "e2", "input": lines[2], "error": REFUSED, "attempts": 1},
        {"id": "e4", "input": lines[4], "error": chunk_failure["error"], "attempts": 1},
        {"id": "e5", "input": lines[5], "error": chunk_failure["error"], "attempts": 1},
    ]
    assert "401" in chunk_failure["error"]
    # Beside the output, which has the answered items and the refused ones.
    assert Path(status["errors_uri"]).parent == Path(status["output_uri"]).parent


def test_a_job_with_nothing_failed_has_no_errors_file(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer
) -> None:
    items = [{"id": f"ok{i}", "prompt": f"fine {i}"} for i in range(3)]
    accepted = api.post("/jobs", json={"workload": "llm", "items": items, "chunk_size": 2})
    status = wait_until_ended(api, accepted.json()["job_id"])
    assert (status["status"], status["errors_uri"]) == ("succeeded", None)
    assert status["output_uri"] is not None
