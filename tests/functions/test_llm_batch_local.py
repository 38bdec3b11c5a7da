"""Batch mode on the local path: POST /jobs with `"mode": "batch"`, the app served over HTTP,
its functions run by the stand-in executor on the SDK's protocol (the poll runs' durable
sleeps included), the real openai SDK talking to the test server's Batch API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.executor import StandInExecutor, serving
from tests.llm_server import FakeModelServer
from tests.support import FakeInngestApi

TURNAROUND_S = 1.5


@pytest.fixture
def batch_model(model: FakeModelServer, monkeypatch: pytest.MonkeyPatch) -> FakeModelServer:
    """The test server as the model, its batches taking TURNAROUND_S; polls a second apart."""
    from chunking.settings import get_settings

    monkeypatch.setenv("LLM_BATCH_POLL_MIN_S", "0.3")
    monkeypatch.setenv("LLM_BATCH_POLL_MAX_S", "1")
    get_settings.cache_clear()
    model.batch.turnaround_s, model.batch.cancel_s = TURNAROUND_S, 0.5
    return model


@pytest.fixture
def executor(
    batch_model: FakeModelServer, api: httpx.Client, fake_inngest: FakeInngestApi
) -> Iterator[StandInExecutor]:
    with serving(api, fake_inngest, workers=8) as running:
        yield running


def write_input(path: Path, lines: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def wait_until_ended(api: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = api.get(f"/jobs/{job_id}").json()
        if status["status"] not in ("queued", "running"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"the job did not end: {status}")


def batches_of(model: FakeModelServer, job_id: str) -> list[Any]:
    return sorted(
        (b for b in model.batch.batches.values() if (b.metadata or {}).get("job_id") == job_id),
        key=lambda b: b.seq,
    )


def merged_lines(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(status["output_uri"]).read_text().splitlines()]


def start(api: httpx.Client, uri: str, **spec: Any) -> str:
    body = {"workload": "llm", "input_uri": uri, "mode": "batch", **spec}
    response = api.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_a_batch_job_succeeds_every_item_answered_once_at_the_batch_price(
    api: httpx.Client, executor: StandInExecutor, batch_model: FakeModelServer, tmp_path: Path
) -> None:
    lines = [{"id": f"r{i}", "text": f"review {i}"} for i in range(10)]
    uri = write_input(tmp_path / "reviews.jsonl", lines)
    job_id = start(api, uri, chunk_size=4, prompt_template="Classify: {text}")
    status = wait_until_ended(api, job_id)

    assert (status["status"], status["chunks_succeeded"], status["items_processed"]) == (
        "succeeded", 3, 10,
    )  # fmt: skip
    # Each chunk one provider batch, each item in exactly one request.
    batches = batches_of(batch_model, job_id)
    assert len(batches) == 3
    assert sorted(len(b.requests) for b in batches) == [2, 4, 4]
    sent = sorted(int(r.custom_id) for b in batches for r in b.requests)
    assert sent == list(range(10))
    # The same answers realtime gives, merged in input order.
    merged = merged_lines(status)
    assert [m["id"] for m in merged] == [f"r{i}" for i in range(10)]
    assert [m["output"] for m in merged] == [f"echo: Classify: review {i}" for i in range(10)]
    # Its progress and its price: half of what the same tokens cost in realtime.
    assert status["batch"] == {
        "batches": 3, "requests_submitted": 10, "requests_done": 10,
        "requests_resubmitted": 0, "requeued": 0, "discount": 0.5,
    }  # fmt: skip
    usage = status["usage"]
    assert usage["realtime_cost_usd"] > 0
    assert usage["est_cost_usd"] == pytest.approx(usage["realtime_cost_usd"] * 0.5, abs=1e-6)
    # The chunks waited in durable sleeps (poll runs), each chunk's wait one span.
    polls = [run for run in executor.runs if run[0].endswith("poll-chunk")]
    assert len(polls) >= 3
    page = api.get(f"/jobs/{job_id}/chunks").json()["chunks"]
    for chunk in page:
        assert chunk["batch"]["status"] == "completed" and chunk["batch"]["round"] == 1
        assert chunk["batch"]["id"] in {b.id for b in batches}
        assert (chunk["batch"]["completed"], chunk["batch"]["failed"]) == (chunk["items"], 0)
        assert [span["outcome"] for span in chunk["timeline"]] == ["succeeded"]
        assert chunk["attempts"] == 1 and chunk["continuations"] == 0


def test_expired_requests_are_sent_again_alone_and_a_refused_one_fails_only_its_item(
    api: httpx.Client, executor: StandInExecutor, batch_model: FakeModelServer, tmp_path: Path
) -> None:
    lines = [{"id": f"x{i}", "prompt": f"item {i}"} for i in range(6)]
    lines[1] = {"id": "x1", "prompt": "[expirex1] item 1"}  # not finished by its first batch
    lines[4] = {"id": "x4", "prompt": "[400-context] item 4"}  # in the error file: its failure
    uri = write_input(tmp_path / "mixed.jsonl", lines)
    job_id = start(api, uri, chunk_size=6)
    status = wait_until_ended(api, job_id)

    assert (status["status"], status["items_processed"], status["usage"]["items_failed"]) == (
        "partial", 6, 1,
    )  # fmt: skip
    first, second = batches_of(batch_model, job_id)
    assert (first.status, second.status) == ("expired", "completed")
    assert [r.custom_id for r in second.requests] == ["1"]  # only what expired, not x4
    assert status["batch"]["requests_resubmitted"] == 1
    assert status["batch"]["batches"] == 2 and status["batch"]["requests_submitted"] == 7
    merged = {m["id"]: m for m in merged_lines(status)}
    assert merged["x1"]["output"] == "echo: [expirex1] item 1"
    assert merged["x4"]["output"] is None
    assert merged["x4"]["error"].startswith("400 context_length_exceeded: ")
    [chunk] = api.get(f"/jobs/{job_id}/chunks").json()["chunks"]
    assert (chunk["batch"]["round"], chunk["batch"]["resubmitted"]) == (2, 1)


def test_cancel_mid_batch_cancels_the_provider_batch_and_keeps_what_came_back(
    api: httpx.Client, executor: StandInExecutor, batch_model: FakeModelServer, tmp_path: Path
) -> None:
    batch_model.batch.turnaround_s = 6.0
    lines = [{"id": f"c{i}", "prompt": f"cancel me {i}"} for i in range(20)]
    uri = write_input(tmp_path / "cancel.jsonl", lines)
    job_id = start(api, uri, chunk_size=20)
    deadline = time.monotonic() + 20
    while not any(b.status == "in_progress" for b in batches_of(batch_model, job_id)):
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.1)
    time.sleep(2.5)  # some of its requests answered, not all
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    status = wait_until_ended(api, job_id)
    deadline = time.monotonic() + 20
    while (status := api.get(f"/jobs/{job_id}").json())["chunks_failed"] < 1:
        assert time.monotonic() < deadline, f"the chunk was never recorded: {status}"
        time.sleep(0.2)

    [batch] = batches_of(batch_model, job_id)
    assert batch.status == "cancelled"
    assert status["status"] == "cancelled"
    [chunk] = api.get(f"/jobs/{job_id}/chunks").json()["chunks"]
    kept = chunk["batch"]["completed"]
    assert 0 < kept < 20, chunk
    assert f"{kept} items answered before the cancel are kept" in chunk["error"]
    from functions.deps import get_store

    assert len(get_store().item_results(job_id, 0)) == kept


def test_an_app_restart_during_the_wait_loses_nothing(
    tmp_path: Path,
    fake_inngest: FakeInngestApi,
    model: FakeModelServer,
    model_server: tuple[FakeModelServer, str],
) -> None:
    """The app that submitted the batch is stopped while its poll run sleeps (in the engine,
    not in the app); a new app process on the same store takes the poll run: the batch is
    found on the chunk's row, not submitted again, and the job ends with every item once."""
    from tests.conftest import FAKE_INNGEST_SERVER
    from tests.support import AppProcess, drive_over_http
    from tests.test_replicas import API_KEY, APP_ID, EVENT_KEY, SIGNING_KEY

    fake_model, model_url = model_server
    fake_model.batch.turnaround_s = 2.0
    uri = write_input(tmp_path / "restart.jsonl",
                      [{"id": f"s{i}", "prompt": f"survive {i}"} for i in range(6)])  # fmt: skip
    env = {
        "JOB_STORE_URL": f"sqlite:///{tmp_path / 'shared.sqlite3'}",
        "INNGEST_EVENT_KEY": EVENT_KEY, "API_KEY": API_KEY, "ALLOWED_HOSTS": "*",
        "OPENAI_BASE_URL": model_url, "OPENAI_API_KEY": "test",
        "LLM_INPUT_ROOT": str(tmp_path), "LLM_OUTPUT_URI": str(tmp_path / "outputs"),
        "LLM_BATCH_POLL_MIN_S": "1", "LLM_BATCH_POLL_MAX_S": "1",
    }  # fmt: skip

    def app_process() -> AppProcess:
        return AppProcess(tmp_path, SIGNING_KEY, FAKE_INNGEST_SERVER.url, 1, None, **env)

    def run(app: AppProcess, fn: str, event: dict[str, Any]) -> Any:
        response = drive_over_http(f"{app.url}/api/inngest", f"{APP_ID}-{fn}", event,
                                   signing_key=SIGNING_KEY, run_id=f"run-{app.port}")  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()

    with app_process() as first:
        body = {"workload": "llm", "input_uri": uri, "chunk_size": 6, "mode": "batch"}
        accepted = httpx.post(f"{first.url}/jobs", json=body, headers={"x-api-key": API_KEY})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        run(first, "start-job", fake_inngest.named("demo/start_job")[0])
        [chunk] = fake_inngest.named("demo/process_chunk")
        assert run(first, "process-chunk", chunk)["outcome"] == "waiting"  # submitted
    assert len(batches_of(fake_model, job_id)) == 1

    with app_process() as second:  # a new process: nothing of the first one's memory
        driven = 0
        deadline = time.monotonic() + 60
        while not fake_inngest.named("demo/finish_job"):
            assert time.monotonic() < deadline, "the job never finished"
            polls = fake_inngest.named("demo/poll_chunk")
            for event in polls[driven:]:
                run(second, "poll-chunk", event)  # sleeps its wait first, as the engine does
            driven = len(polls)
        run(second, "finish-job", fake_inngest.named("demo/finish_job")[0])
        status = httpx.get(f"{second.url}/jobs/{job_id}", headers={"x-api-key": API_KEY}).json()

    assert (status["status"], status["items_processed"]) == ("succeeded", 6)
    [batch] = batches_of(fake_model, job_id)  # never submitted again
    assert sorted(int(r.custom_id) for r in batch.requests) == list(range(6))
    assert [m["output"] for m in merged_lines(status)] == [f"echo: survive {i}" for i in range(6)]
    assert driven >= 1


def test_cancel_stops_the_provider_batches_at_once_not_at_the_next_poll(
    api: httpx.Client,
    executor: StandInExecutor,
    batch_model: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support import set_settings

    set_settings(monkeypatch, LLM_BATCH_POLL_MIN_S="6", LLM_BATCH_POLL_MAX_S="6")
    batch_model.batch.turnaround_s = 30.0
    uri = write_input(tmp_path / "stop.jsonl", [{"id": f"s{i}", "prompt": f"stop {i}"}
                                               for i in range(9)])  # fmt: skip
    job_id = start(api, uri, chunk_size=3)
    deadline = time.monotonic() + 10
    while len(batches_of(batch_model, job_id)) < 3:
        assert time.monotonic() < deadline, "the batches were not all submitted"
        time.sleep(0.1)
    submitted = time.monotonic()
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    while not all(b.status in ("cancelling", "cancelled") for b in batches_of(batch_model, job_id)):
        # The stop unit cancels them; the chunks' next polls are 6 s after their submission.
        assert time.monotonic() - submitted < 4, [b.status for b in batches_of(batch_model, job_id)]
        time.sleep(0.1)
    # Stopped by the cancelled job's own unit (its run is listed once it has answered).
    deadline = time.monotonic() + 10
    while not any(run[0].endswith("stop-cancelled-job") for run in executor.runs):
        assert time.monotonic() < deadline, executor.runs
        time.sleep(0.1)
    # Each chunk's next poll keeps what came back and records the chunk.
    deadline = time.monotonic() + 30
    while (status := api.get(f"/jobs/{job_id}").json())["chunks_failed"] < 3:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["status"] == "cancelled"
    assert all(
        "cancelled" in c["error"] for c in api.get(f"/jobs/{job_id}/chunks").json()["chunks"]
    )
