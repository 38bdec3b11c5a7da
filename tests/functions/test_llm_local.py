"""The llm workload on the local path: POST /jobs over HTTP, then start_job and process_chunk in
the SDK's in-process executor, the real openai SDK talking to the OpenAI-compatible test server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import inngest
import pytest
from inngest.experimental import mocked

from chunking import metrics
from chunking.settings import get_settings
from functions.events import JOB_COMPLETED, PROCESS_CHUNK, START_JOB
from functions.process_chunk import process_chunk
from functions.start_job import start_job
from tests.conftest import MODEL_RETRY_AFTER_S
from tests.llm_server import FakeModelServer
from tests.support import FakeInngestApi, replay, run_finishes, spy_run_errors, trigger
from workloads.llm.input import FULL_CHECK_BYTES


class Recorder:
    """A metrics sink that keeps what it is given."""

    def __init__(self, into: list[tuple[str, float, dict[str, str]]]) -> None:
        self.into = into

    def add(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.into.append((name, value, labels))


def write_input(path: Path, lines: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def test_an_llm_job_runs_end_to_end_and_reports_tokens_cost_and_output(
    api: httpx.Client,
    fake_inngest: FakeInngestApi,
    model: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines: list[dict[str, Any]] = [{"id": f"t{i}", "text": f"ticket {i}"} for i in range(5)]
    lines[0] = {"id": "t0", "prompt": "[refuse] something unsafe"}
    lines[3] = {"id": "t3", "prompt": "[429x1] ticket three"}
    uri = write_input(tmp_path / "tickets.jsonl", lines)
    response = api.post("/jobs", json={"workload": "llm", "input_uri": uri, "chunk_size": 2,
                                       "prompt_template": "Classify: {text}"})  # fmt: skip
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    [start_event] = fake_inngest.named(START_JOB)

    assert replay(start_job, start_event).status is mocked.Status.COMPLETED
    assert api.get(f"/jobs/{job_id}").json()["total_items"] == 5  # counted by start-job
    counted: list[tuple[str, float, dict[str, str]]] = []
    monkeypatch.setattr(metrics, "_sink", Recorder(counted))
    errors = spy_run_errors(process_chunk, monkeypatch)
    results = [replay(process_chunk, e) for e in fake_inngest.named(PROCESS_CHUNK)]
    assert all(r.status is mocked.Status.COMPLETED for r in results), results
    assert api.get(f"/jobs/{job_id}").json()["status"] == "running"  # not merged yet
    assert not [c for c in counted if c[0] == "jobs_ended"]  # not ended until its output is
    [finished] = run_finishes(fake_inngest)
    assert finished.status is mocked.Status.COMPLETED, finished.error
    assert [c for c in counted if c[0] == "jobs_ended"] == [
        ("jobs_ended", 1, {"path": "local", "status": "partial"}),
    ]  # fmt: skip
    run_finishes(fake_inngest)  # a redelivered finishing unit: not counted again
    assert len([c for c in counted if c[0] == "jobs_ended"]) == 1

    # The 429 is no failure: the item waited the server's Retry-After and was asked again.
    assert errors == []

    final = api.get(f"/jobs/{job_id}").json()
    assert (final["status"], final["chunks_succeeded"], final["items_processed"]) == (
        "partial", 3, 5,
    )  # fmt: skip
    assert (final["attempts"], final["retries"]) == (3, 0)
    usage = final["usage"]
    assert usage["rate_limited"] == 1 and usage["rate_wait_s"] >= MODEL_RETRY_AFTER_S * 0.9
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (3 * 3 + 3, 3 * 4 + 4)
    tokens = {kind: sum(c[1] for c in counted if c[0] == "model_tokens" and c[2]["kind"] == kind)
              for kind in ("prompt", "completion")}  # fmt: skip
    assert tokens == {"prompt": usage["prompt_tokens"], "completion": usage["completion_tokens"]}
    assert usage["items_failed"] == 1
    expected_cost = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.60) / 1e6
    assert usage["est_cost_usd"] == round(expected_cost, 6)
    assert final["output_uri"] == str(tmp_path / "outputs" / job_id / "output.jsonl")
    rows = [json.loads(line) for line in Path(final["output_uri"]).read_text().splitlines()]
    assert [r["id"] for r in rows] == ["t0", "t1", "t2", "t3", "t4"]
    assert rows[0]["output"] is None and "content_filter" in rows[0]["error"]
    assert model.calls["[refuse] something unsafe"] == 1  # permanent: never asked again
    assert model.calls["Classify: ticket 2"] == 1
    assert model.calls["[429x1] ticket three"] == 2

    [completed] = fake_inngest.named(JOB_COMPLETED)
    assert completed["data"]["output_uri"] == final["output_uri"]
    assert completed["data"]["usage"]["prompt_tokens"] == usage["prompt_tokens"]


def test_bad_input_is_refused_with_its_line_and_nothing_is_recorded(
    api: httpx.Client, fake_inngest: FakeInngestApi, model: FakeModelServer, tmp_path: Path
) -> None:
    uri = tmp_path / "bad.jsonl"
    uri.write_text('{"id": 1, "prompt": "fine"}\n{"id": 2, "prompt": "cut off\n')
    response = api.post("/jobs", json={"workload": "llm", "input_uri": str(uri)})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "input_uri"
    assert "line 2: not valid JSON" in error["message"]
    response = api.post("/jobs", json={"workload": "llm"})
    assert response.status_code == 400 and "input_uri" in response.text
    assert fake_inngest.events == [] and api.get("/jobs").json() == []

    # The same input sent straight to demo/start_job (e.g. from the Dev Server UI).
    result = trigger(start_job, START_JOB, {"workload": "llm", "input_uri": str(uri)})
    assert result.status is mocked.Status.FAILED
    assert isinstance(result.error, inngest.NonRetriableError)
    assert "input_uri" in str(result.error) and "line 2" in str(result.error)


def test_no_model_call_outlives_the_step_budget(
    fake_inngest: FakeInngestApi,
    model: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INNGEST_STEP_BUDGET_S", "1.5")
    get_settings.cache_clear()
    uri = write_input(tmp_path / "in.jsonl", [{"id": "a", "prompt": "quick a"},
                                              {"id": "b", "prompt": "[hang] b"}])  # fmt: skip
    started = trigger(start_job, START_JOB, {"workload": "llm", "input_uri": uri})
    assert started.status is mocked.Status.COMPLETED, started.error
    [event] = fake_inngest.named(PROCESS_CHUNK)
    began = time.monotonic()
    result = replay(process_chunk, event)
    elapsed = time.monotonic() - began
    assert result.status is mocked.Status.FAILED
    attempts = 1 + get_settings().chunk_retries
    assert elapsed < attempts * 1.5 + 2  # the server hangs for 30 s; every call was cut short
    run_finishes(fake_inngest)
    status = api_status(started.output["job_id"])
    [failed] = status["failed_chunks"]
    assert failed["attempts"] == attempts and "gave up after 4 attempts" in failed["error"]
    assert model.calls["quick a"] == 1  # answered on the first attempt, kept, never re-asked
    assert model.calls["[hang] b"] == attempts
    rows = (tmp_path / "outputs" / started.output["job_id"] / "output.jsonl").read_text()
    assert [json.loads(r)["id"] for r in rows.splitlines()] == ["a"]


def api_status(job_id: str) -> dict[str, Any]:
    from functions.deps import get_store

    found = get_store().status(job_id)
    assert found is not None
    result: dict[str, Any] = found.model_dump(mode="json")
    return result


def big_input(path: Path, lines: int, bad_line: int | None = None) -> str:
    """An input over FULL_CHECK_BYTES (so the request reads none of it), one line maybe bad."""
    rows = [
        json.dumps({"id": i, "prompt": f"question number {i} " + "x" * 40}) for i in range(lines)
    ]
    if bad_line is not None:
        rows[bad_line - 1] = '{"id": "cut", "prompt": "no end'
    path.write_text("\n".join(rows) + "\n")
    assert path.stat().st_size > FULL_CHECK_BYTES
    return str(path)


def test_a_large_input_is_indexed_by_start_job_not_read_by_the_request(
    api: httpx.Client,
    fake_inngest: FakeInngestApi,
    model: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import workloads.llm.input

    parsed: list[int] = []
    real_item = workloads.llm.input._item

    def counted(index: int, number: int, line: str, template: str | None) -> Any:
        parsed.append(number)
        return real_item(index, number, line, template)

    monkeypatch.setattr(workloads.llm.input, "_item", counted)
    uri = big_input(tmp_path / "in.jsonl", 3_000)
    response = api.post("/jobs", json={"workload": "llm", "input_uri": uri, "chunk_size": 250})
    assert response.status_code == 202, response.text
    assert parsed == []  # the request read no line of it
    job_id = response.json()["job_id"]
    assert api.get(f"/jobs/{job_id}").json()["total_items"] == 0  # not counted yet
    [event] = fake_inngest.named(START_JOB)
    assert replay(start_job, event).status is mocked.Status.COMPLETED
    assert len(parsed) == 3_000  # start-job read each line once
    status = api.get(f"/jobs/{job_id}").json()
    assert (status["total_items"], status["total_chunks"]) == (3_000, 12)
    assert len(fake_inngest.named(PROCESS_CHUNK)) == 12


def test_a_bad_line_deep_in_a_large_input_fails_the_job_and_enqueues_nothing(
    api: httpx.Client, fake_inngest: FakeInngestApi, model: FakeModelServer, tmp_path: Path
) -> None:
    uri = big_input(tmp_path / "in.jsonl", 20_000, bad_line=17_321)
    response = api.post("/jobs", json={"workload": "llm", "input_uri": uri, "chunk_size": 100})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    [event] = fake_inngest.named(START_JOB)
    result = replay(start_job, event)
    assert result.status is mocked.Status.COMPLETED, result.error  # nothing to retry
    status = api.get(f"/jobs/{job_id}").json()
    assert status["status"] == "failed"
    assert "line 17321: not valid JSON" in status["error"] and "input_uri" in status["error"]
    assert fake_inngest.named(PROCESS_CHUNK) == []
    assert sum(model.calls.values()) == 0


def test_a_429_storm_ends_with_every_chunk_succeeded_and_no_retry_spent(
    api: httpx.Client,
    fake_inngest: FakeInngestApi,
    model: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines: list[dict[str, Any]] = [{"id": f"s{i}", "prompt": f"storm {i}"} for i in range(6)]
    uri = write_input(tmp_path / "storm.jsonl", lines)
    response = api.post("/jobs", json={"workload": "llm", "input_uri": uri, "chunk_size": 2})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    [start_event] = fake_inngest.named(START_JOB)
    assert replay(start_job, start_event).status is mocked.Status.COMPLETED
    errors = spy_run_errors(process_chunk, monkeypatch)
    model.storm(3)  # the server refuses everything for 3 s
    results = [replay(process_chunk, e) for e in fake_inngest.named(PROCESS_CHUNK)]
    assert all(r.status is mocked.Status.COMPLETED for r in results), results
    assert errors == []  # no run failed: nothing for the executor to retry
    run_finishes(fake_inngest)
    final = api.get(f"/jobs/{job_id}").json()
    assert (final["status"], final["chunks_succeeded"], final["retries"]) == ("succeeded", 3, 0)
    assert final["usage"]["rate_limited"] >= 1 and final["usage"]["rate_wait_s"] >= 2
    assert sum(model.calls[f"storm {i}"] for i in range(6)) == 6 + final["usage"]["rate_limited"]
