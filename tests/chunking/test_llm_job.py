"""The llm workload as a job: the spec, its preparation, its files, and chunks run by the runner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from chunking import lifecycle
from chunking.api_errors import field_errors
from chunking.prepare import prepare_spec
from chunking.runner import AttemptOutcome, attempt_chunk
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import JobRecord
from stores.sqlite import SqliteJobStore
from tests.conftest import MODEL_RETRY_AFTER_S
from tests.llm_server import FakeModelServer
from workloads.llm import blobs
from workloads.llm.outputs import chunk_output_uri


def write_input(path: Path, lines: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def lines_of(uri: str) -> list[str]:
    return [line.text for line in blobs.read_line_spans(uri)]


def errors_of(spec: Mapping[str, object], path: str = "local") -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        prepare_spec(JobSpec.model_validate(spec), "cloud" if path == "cloud" else "local")
    return {e["field"]: e["message"] for e in field_errors(info.value)}


# --- the spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"workload": "llm"}, "input_uri", "needs an input_uri"),
        ({"input_uri": "x.jsonl"}, "input_uri", "only the llm workload"),
        ({"workload": "llm", "input_uri": "s3://bucket"}, "input_uri", "s3://bucket/key"),
        ({"workload": "llm", "input_uri": "a", "prompt_template": "no slot"}, "prompt_template",
         "{text}"),
        ({"prompt_template": "{text}"}, "prompt_template", "llm workload only"),
        ({"workload": "llm", "input_uri": "a", "max_tokens": 0}, "max_tokens", "greater than"),
        ({"workload": "llm", "input_uri": "a", "fail_chunks": [0]}, "fail_chunks", "simulate"),
    ],
)  # fmt: skip
def test_llm_fields_are_validated_by_name(spec: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec)
    found = {e["field"]: e["message"] for e in field_errors(info.value)}
    assert words in found[field]


# --- preparing a job from its input -------------------------------------------------------------


def planned_job(store: SqliteJobStore, spec: JobSpec, job_id: str = "llm") -> JobRecord:
    """Record the job as the APIs do, then plan it as its first durable unit does."""
    store.create_job(job_id, prepare_spec(spec, "local"), "local")
    outcome = lifecycle.plan(store, job_id, None, None)
    assert outcome.started and outcome.failed is None, outcome
    job = store.get_job(job_id)
    assert job is not None
    return job


def test_planning_counts_the_input_items(model: FakeModelServer, tmp_path: Path) -> None:
    uri = write_input(tmp_path / "in.jsonl", [{"id": i, "text": f"t{i}"} for i in range(7)])
    spec = JobSpec(workload="llm", input_uri=uri, chunk_size=3, prompt_template="Q: {text}")
    assert prepare_spec(spec, "local") == spec  # checked at submission, counted later
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job = planned_job(store, spec)
    assert (job.total_items, job.total_chunks, job.state) == (7, 3, "running")


def test_prepare_refuses_what_cannot_run(model: FakeModelServer, tmp_path: Path) -> None:
    uri = write_input(tmp_path / "in.jsonl", [{"id": 1, "prompt": "a"}, {"id": 1, "prompt": "b"}])
    assert (
        "line 2: id '1' is also on line 1"
        in errors_of({"workload": "llm", "input_uri": uri})["input_uri"]
    )
    (tmp_path / "text.jsonl").write_text('{"id": "a", "text": "no template"}\n')
    spec = {"workload": "llm", "input_uri": str(tmp_path / "text.jsonl")}
    assert "no prompt_template" in errors_of(spec)["input_uri"]
    missing = {"workload": "llm", "input_uri": str(tmp_path / "missing.jsonl")}
    assert "not found or not allowed" in errors_of(missing)["input_uri"]
    outside = errors_of({"workload": "llm", "input_uri": "/etc/passwd"})["input_uri"]
    assert "not found or not allowed" in outside
    good = write_input(tmp_path / "good.jsonl", [{"id": "a", "prompt": "p"}])
    assert (
        "counted from the input"
        in errors_of({"workload": "llm", "input_uri": good, "total_items": 5})["total_items"]
    )
    assert (
        "upload the file" in errors_of({"workload": "llm", "input_uri": good}, "cloud")["input_uri"]
    )


def test_prepare_refuses_llm_jobs_without_a_model_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    get_settings.cache_clear()
    good = write_input(tmp_path / "good.jsonl", [{"id": "a", "prompt": "p"}])
    assert (
        "OPENAI_API_KEY is not set" in errors_of({"workload": "llm", "input_uri": good})["workload"]
    )


# --- files on S3 -------------------------------------------------------------------------------


def test_s3_files_are_read_by_line_and_replaced_whole(aws_env: None) -> None:
    with mock_aws():
        blobs.s3_client.cache_clear()
        boto3.client("s3").create_bucket(Bucket="data")
        blobs.write_lines("s3://data/in/x.jsonl", (f"line {i}" for i in range(3)))
        assert lines_of("s3://data/in/x.jsonl") == ["line 0", "line 1", "line 2"]
        blobs.write_lines("s3://data/in/x.jsonl", ["only"])
        assert lines_of("s3://data/in/x.jsonl") == ["only"]
        with pytest.raises(FileNotFoundError, match="no such object"):
            lines_of("s3://data/in/missing.jsonl")
        with pytest.raises(FileNotFoundError):
            lines_of("s3://no-bucket/x")
    blobs.s3_client.cache_clear()


# --- chunks run by the runner -----------------------------------------------------------------


def run_chunk_attempt(store: SqliteJobStore, job_id: str, index: int) -> AttemptOutcome:
    return asyncio.get_event_loop().run_until_complete(
        attempt_chunk(store, job_id, index, last_attempt=False, budget_s=30)
    )


def test_an_llm_job_answers_every_item_and_merges_outputs_in_input_order(
    model: FakeModelServer, tmp_path: Path
) -> None:
    lines: list[dict[str, object]] = [{"id": f"q{i}", "text": f"item {i}"} for i in range(7)]
    lines[2] = {"id": "q2", "prompt": "[400-context] far too long"}
    lines[4] = {"id": "q4", "prompt": "[429x1] busy once"}
    uri = write_input(tmp_path / "in.jsonl", lines)
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    planned_job(
        store, JobSpec(workload="llm", input_uri=uri, chunk_size=3, prompt_template="Say: {text}")
    )

    # Chunks finish out of order; chunk 1 is rate-limited once on its second item: it waits
    # what the server asked and asks again, in the same attempt (no retry spent).
    run_chunk_attempt(store, "llm", 2)
    run_chunk_attempt(store, "llm", 1)
    status = store.status("llm")
    assert status is not None and status.status == "running" and status.output_uri is None
    assert status.usage is not None and status.usage.rate_limited == 1
    assert status.usage.rate_wait_s >= MODEL_RETRY_AFTER_S * 0.9
    assert run_chunk_attempt(store, "llm", 0).job_finished
    status = store.status("llm")  # every chunk settled, but the output is not merged yet
    assert status is not None and status.status == "running" and status.output_uri is None
    lifecycle.finish(store, "llm")  # the job's finishing unit

    status = store.status("llm")
    assert status is not None and status.usage is not None
    assert (status.status, status.chunks_succeeded, status.items_processed) == ("partial", 3, 7)
    assert (status.attempts, status.retries, status.usage.items_failed) == (3, 0, 1)
    # The test server counts words: "Say: item N" is 3 prompt tokens and 4 completion tokens.
    assert status.usage.prompt_tokens == 5 * 3 + 3
    assert status.usage.completion_tokens == 5 * 4 + 4
    assert status.output_uri == str(tmp_path / "outputs" / "llm" / "output.jsonl")

    merged = [json.loads(line) for line in Path(status.output_uri).read_text().splitlines()]
    assert [m["id"] for m in merged] == [f"q{i}" for i in range(7)]
    assert merged[0] == {
        "id": "q0", "output": "echo: Say: item 0",
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        "latency_ms": merged[0]["latency_ms"],
    }  # fmt: skip
    assert merged[2]["output"] is None and "context_length_exceeded" in merged[2]["error"]
    assert merged[4]["output"] == "echo: [429x1] busy once"
    chunk_files = sorted(p.name for p in (tmp_path / "outputs" / "llm").glob("chunk-*"))
    assert chunk_files == [  # each chunk's output, and its failed items (workloads.llm.failures)
        f"chunk-00000{i}{kind}.jsonl" for i in range(3) for kind in (".errors", "")
    ]
    assert Path(chunk_output_uri("llm", 2)).read_text().count("\n") == 1
    # Paid once: the 429 asked again only that item; no retry of the 400.
    assert model.calls["Say: item 3"] == 1
    assert model.calls["[429x1] busy once"] == 2
    assert model.calls["[400-context] far too long"] == 1


def test_an_input_changed_under_a_running_job_fails_the_chunk_permanently(
    model: FakeModelServer, tmp_path: Path
) -> None:
    uri = write_input(tmp_path / "in.jsonl", [{"id": i, "prompt": f"p {i}"} for i in range(4)])
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    planned_job(store, JobSpec(workload="llm", input_uri=uri, chunk_size=2))
    write_input(tmp_path / "in.jsonl", [{"id": 0, "prompt": "p 0"}])
    outcome = run_chunk_attempt(store, "llm", 1)
    assert outcome.outcome == "failed"
    assert "the input has changed" in str(outcome.error)
