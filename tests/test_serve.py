"""The Inngest serve endpoint over HTTP: inspection, registration, signing, retry signals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from inngest._internal.net import sign_request

from chunking.settings import get_settings
from chunking.spec import JobSpec
from tests.support import (
    AppProcess,
    FakeInngestApi,
    ServerThread,
    drive_counting_calls,
    drive_over_http,
    run_finishes,
)

APP_ID = "long-jobs"
SIGNING_KEY = "signkey-test-" + "ab" * 32


@pytest.fixture
def app_server(fake_inngest: FakeInngestApi) -> Iterator[str]:
    from main import app

    server = ServerThread(app).start()
    yield server.url
    server.stop()


def test_get_serve_endpoint_describes_the_app(app_server: str) -> None:
    response = httpx.get(f"{app_server}/api/inngest")
    assert response.status_code == 200
    body = response.json()
    assert body["mode"] == "dev"
    assert body["function_count"] == 14  # 10, and 4 failure handlers with retries


def test_put_registers_the_functions(app_server: str, fake_inngest: FakeInngestApi) -> None:
    response = httpx.put(f"{app_server}/api/inngest")
    assert response.status_code == 200, response.text
    [registration] = fake_inngest.registrations
    assert registration["appname"] == APP_ID
    assert registration["url"].startswith(f"{app_server}/api/inngest")
    functions = {f["id"]: f for f in registration["functions"]}

    def trigger_of(fn_id: str) -> str:
        [trig] = functions[f"{APP_ID}-{fn_id}"]["triggers"]
        return str(trig["event"])

    def step_of(fn_id: str) -> dict[str, Any]:
        step: dict[str, Any] = functions[f"{APP_ID}-{fn_id}"]["steps"]["step"]
        return step

    assert trigger_of("bad-long-job") == "demo/bad_long_job"
    assert trigger_of("start-job") == "demo/start_job"
    assert trigger_of("process-chunk") == "demo/process_chunk"
    assert trigger_of("trigger-aws-sam-job") == "demo/trigger_aws_sam_job"
    assert trigger_of("send-callback") == "demo/job_completed"
    assert step_of("send-callback")["retries"]["attempts"] == 5
    assert step_of("bad-long-job")["retries"]["attempts"] == 0
    assert step_of("start-job")["retries"]["attempts"] == 3
    assert step_of("process-chunk")["retries"]["attempts"] == 3  # CHUNK_RETRIES
    assert step_of("trigger-aws-sam-job")["retries"]["attempts"] == 3
    chunk_fn = functions[f"{APP_ID}-process-chunk"]
    # CHUNK_CONCURRENCY in all, TENANT_CHUNK_CONCURRENCY per tenant; high jobs first.
    assert chunk_fn["concurrency"] == [{"limit": 10}, {"limit": 5, "key": "event.data.tenant"}]
    assert chunk_fn["priority"] == {
        "run": "event.data.priority == 'high' ? 600 : (event.data.priority == 'low' ? -600 : 0)"
    }
    # A job's demo/job_cancelled cancels its waiting chunk runs and its fan-out.
    cancel = [{"event": "demo/job_cancelled", "if": "async.data.job_id == event.data.job_id"}]
    assert functions[f"{APP_ID}-process-chunk"]["cancel"] == cancel
    assert functions[f"{APP_ID}-start-job"]["cancel"] == cancel
    # A batch-mode chunk's polls: the same limits, and no cancel (a cancelled job's chunk
    # cancels its provider batch in them, and keeps what came back).
    poll_fn = functions[f"{APP_ID}-poll-chunk"]
    assert trigger_of("poll-chunk") == "demo/poll_chunk"
    assert poll_fn["concurrency"] == chunk_fn["concurrency"]
    assert poll_fn["priority"] == chunk_fn["priority"] and "cancel" not in poll_fn
    # A cancelled job's provider batches are stopped at once, by a unit of their own.
    assert trigger_of("stop-cancelled-job") == "demo/job_cancelled"
    # Failure handlers keep every failed run visible in the job store: each a function of its
    # own on the engine's failure event, with retries (the SDK's on_failure has none, so an
    # outage of the app lost it with the run).
    for fn_id in ("process-chunk", "poll-chunk", "start-job", "finish-job"):
        handler = functions[f"{APP_ID}-{fn_id}-failure"]
        assert handler["triggers"] == [{
            "event": "inngest/function.failed",
            "expression": f"event.data.function_id == '{APP_ID}-{fn_id}'",
        }]  # fmt: skip
        assert handler["steps"]["step"]["retries"]["attempts"] == 9  # FAILURE_RETRIES
    # The sweep of stalled jobs: every minute, one tick at a time, with retries of its own.
    sweep = functions[f"{APP_ID}-sweep-stalled-jobs"]
    assert sweep["triggers"] == [{"cron": "* * * * *"}]
    assert sweep["concurrency"] == [{"limit": 1}]
    assert step_of("sweep-stalled-jobs")["retries"]["attempts"] == 3


def test_permanent_chunk_failure_tells_the_executor_not_to_retry(app_server: str) -> None:
    from chunking.spec import JobSpec
    from functions.deps import get_store

    store = get_store()
    store.create_job("wire", JobSpec(total_items=20, chunk_size=10, fail_chunks=[1]), "local")
    store.start_job("wire")
    event = {"name": "demo/process_chunk", "data": {"job_id": "wire", "chunk_index": 1}}
    response = drive_over_http(f"{app_server}/api/inngest", f"{APP_ID}-process-chunk", event)
    assert response.status_code == 500
    assert response.headers["x-inngest-no-retry"] == "true"
    assert "fail_chunks" in response.json()["message"]


def test_transient_chunk_failure_is_left_to_retry(app_server: str) -> None:
    from chunking.spec import JobSpec
    from functions.deps import get_store

    store = get_store()
    store.create_job("flaky", JobSpec(total_items=10, chunk_size=10, flaky_chunks={0: 1}), "local")
    store.start_job("flaky")
    event = {"name": "demo/process_chunk", "data": {"job_id": "flaky", "chunk_index": 0}}
    url, fn_id = f"{app_server}/api/inngest", f"{APP_ID}-process-chunk"
    first = drive_over_http(url, fn_id, event, attempt=0)
    # The step errored: the SDK reports it for Inngest to retry with backoff.
    assert first.status_code == 206 or "x-inngest-no-retry" not in first.headers
    second = drive_over_http(url, fn_id, event, attempt=1)
    assert second.status_code == 200, second.text
    status = store.status("flaky")
    assert status is not None and (status.status, status.retries) == ("succeeded", 1)


@pytest.fixture
def production_app(tmp_path: Path) -> Iterator[str]:
    """The real app, started as a user would in production: dev mode off, a signing key set."""
    with AppProcess(tmp_path, SIGNING_KEY) as app:
        yield app.url


def test_unsigned_calls_are_rejected_in_production(production_app: str) -> None:
    event = {"name": "demo/start_job", "data": {}}
    body = {"ctx": {"attempt": 0, "disable_immediate_execution": False, "run_id": "r",
                    "stack": {"stack": []}}, "event": event, "events": [event], "steps": {},
            "use_api": False}  # fmt: skip
    response = httpx.post(
        f"{production_app}/api/inngest",
        params={"fnId": f"{APP_ID}-start-job", "stepId": "step"},
        json=body,
    )
    assert response.status_code == 401, response.text
    assert response.json() == {"message": "Unauthorized"}
    forged = httpx.post(
        f"{production_app}/api/inngest",
        params={"fnId": f"{APP_ID}-start-job", "stepId": "step"},
        json=body,
        headers={"x-inngest-signature": "t=1700000000&s=deadbeef"},
    )
    assert forged.status_code == 401
    # Nothing ran: no job was recorded.
    assert httpx.get(f"{production_app}/jobs").json() == []

    # The same call signed with the key, as Inngest would sign it, is accepted and runs.
    raw = json.dumps(body).encode()
    signature = sign_request(raw, SIGNING_KEY)
    assert isinstance(signature, str)
    signed = httpx.post(
        f"{production_app}/api/inngest",
        params={"fnId": f"{APP_ID}-start-job", "stepId": "step"},
        content=raw,
        headers={"x-inngest-signature": signature, "content-type": "application/json"},
    )
    assert signed.status_code == 206, signed.text
    assert len(httpx.get(f"{production_app}/jobs").json()) == 1


def test_failure_handler_records_a_chunk_whose_run_failed(
    app_server: str, fake_inngest: FakeInngestApi
) -> None:
    """If a run dies outside the chunk's own handling, on_failure still settles the chunk."""
    from chunking.spec import JobSpec
    from functions.deps import get_store

    store = get_store()
    store.create_job("crashy", JobSpec(total_items=10, chunk_size=10), "local")
    store.start_job("crashy")
    store.begin_attempt("crashy", 0)  # the run started the chunk, then died
    failed_run = {
        "name": "inngest/function.failed",
        "data": {
            "function_id": f"{APP_ID}-process-chunk",
            "run_id": "run-1",
            "error": {"name": "OperationalError", "message": "database is locked"},
            "event": {"name": "demo/process_chunk", "data": {"job_id": "crashy", "chunk_index": 0}},
        },
    }
    response = drive_over_http(
        f"{app_server}/api/inngest", f"{APP_ID}-process-chunk-failure", failed_run
    )
    assert response.status_code == 200, response.text
    status = store.status("crashy")
    assert status is not None
    assert status.status == "failed"
    assert status.failed_chunks[0].error == "run failed: database is locked"
    run_finishes(fake_inngest)  # the failure handler's chunk finished the job
    [completed] = fake_inngest.named("demo/job_completed")
    assert completed["data"]["chunks_failed"] == 1


def test_a_finish_that_gave_up_fails_the_job_with_its_reason(
    app_server: str, fake_inngest: FakeInngestApi
) -> None:
    from functions.deps import get_store

    store = get_store()
    spec = JobSpec(workload="llm", input_uri="in.jsonl", chunk_size=10)
    store.create_job("unmerged", spec, "local")
    assert store.set_plan("unmerged", 10) and store.start_job("unmerged")
    store.begin_attempt("unmerged", 0)
    assert store.settle_chunk("unmerged", 0, succeeded=True, items=10).job_finished
    status = store.status("unmerged")
    assert status is not None and status.status == "running"  # waiting for its output
    failed_run = {
        "name": "inngest/function.failed",
        "data": {
            "function_id": f"{APP_ID}-finish-job",
            "run_id": "run-2",
            "error": {"name": "StoreUnavailableError", "message": "S3 is unavailable"},
            "event": {"name": "demo/finish_job", "data": {"job_id": "unmerged"}},
        },
    }
    response = drive_over_http(
        f"{app_server}/api/inngest", f"{APP_ID}-finish-job-failure", failed_run
    )
    assert response.status_code == 200, response.text
    status = store.status("unmerged")
    assert status is not None and status.status == "failed"
    assert status.error == "the job's results could not be written: S3 is unavailable"


def test_one_call_per_chunk_gets_the_runs_final_result(
    app_server: str, fake_inngest: FakeInngestApi
) -> None:
    """The executor's first request runs the whole chunk and gets the run's final result, not
    a planned step, for a succeeding, a permanently failing and a finishing chunk."""
    from functions.deps import get_store

    store = get_store()
    store.create_job("once", JobSpec(total_items=30, chunk_size=10, fail_chunks=[1]), "local")
    store.start_job("once")
    url, fn_id = f"{app_server}/api/inngest", f"{APP_ID}-process-chunk"

    def chunk(index: int) -> dict[str, Any]:
        return {"name": "demo/process_chunk", "data": {"job_id": "once", "chunk_index": index}}

    succeeded, calls = drive_counting_calls(url, fn_id, chunk(0))
    assert (succeeded.status_code, calls) == (200, 1), succeeded.text
    assert succeeded.json()["outcome"] == "succeeded"
    failed, calls = drive_counting_calls(url, fn_id, chunk(1))
    assert (failed.status_code, calls) == (500, 1)
    assert failed.headers["x-inngest-no-retry"] == "true" and "fail_chunks" in failed.text
    finishing, calls = drive_counting_calls(url, fn_id, chunk(2))
    assert (finishing.status_code, calls) == (200, 1), finishing.text
    assert finishing.json()["job_finished"] is True
    [finish_event] = fake_inngest.named("demo/finish_job")
    assert finish_event["id"] == "once-finish"

    # The finishing unit and the callback: one call each too.
    finish, calls = drive_counting_calls(url, f"{APP_ID}-finish-job", finish_event)
    assert (finish.status_code, calls) == (200, 1), finish.text
    assert finish.json() == "partial"
    [completed] = fake_inngest.named("demo/job_completed")
    callback, calls = drive_counting_calls(url, f"{APP_ID}-send-callback", completed)
    assert (callback.status_code, calls) == (200, 1) and callback.json() == "no callback_url"


def failed_run_of(event: dict[str, Any], message: str) -> dict[str, Any]:
    """What Inngest sends a function's failure handler once a run has failed for good."""
    return {
        "name": "inngest/function.failed",
        "data": {"function_id": f"{APP_ID}-process-chunk", "run_id": "run-9",
                 "error": {"name": "Error", "message": message}, "event": event},
    }  # fmt: skip


def test_an_outage_before_a_chunk_began_costs_time_not_its_retries(
    app_server: str, fake_inngest: FakeInngestApi
) -> None:
    from functions.deps import get_store
    from tests.support import free_port

    store = get_store()
    store.create_job("outage", JobSpec(total_items=20, chunk_size=10), "local")
    store.start_job("outage")
    event = {"name": "demo/process_chunk", "data": {"job_id": "outage", "chunk_index": 0}}
    # The app is unreachable: every one of the run's deliveries fails before the chunk begins,
    # and so does the first delivery of the run's failure handler.
    down = f"http://127.0.0.1:{free_port()}/api/inngest"
    for attempt in range(4):
        with pytest.raises(httpx.ConnectError):
            drive_over_http(down, f"{APP_ID}-process-chunk", event, attempt=attempt)
    handler = f"{APP_ID}-process-chunk-failure"
    failed_run = failed_run_of(event, "connection refused")
    with pytest.raises(httpx.ConnectError):
        drive_over_http(down, handler, failed_run, attempt=0)
    # It answers again; Inngest retries the failure handler (FAILURE_RETRIES).
    response = drive_over_http(f"{app_server}/api/inngest", handler, failed_run, attempt=1)
    assert response.status_code == 200, response.text
    status = store.status("outage")
    assert status is not None
    assert (status.status, status.chunks_failed, status.chunks_resent) == ("running", 0, 1)
    [resent] = fake_inngest.named("demo/process_chunk")
    assert resent["id"] == "outage-chunk-0-resent-1" and resent["data"]["resend"] == 1
    # The fresh run: the chunk runs, on its first attempt, one call.
    done, calls = drive_counting_calls(f"{app_server}/api/inngest", f"{APP_ID}-process-chunk",
                                       resent)  # fmt: skip
    assert (done.status_code, calls) == (200, 1) and done.json()["outcome"] == "succeeded"
    chunk = store.chunk("outage", 0)
    assert chunk is not None and (chunk.state, chunk.attempts) == ("succeeded", 1)


def test_resends_are_bounded_then_the_chunk_is_recorded_failed(
    app_server: str, fake_inngest: FakeInngestApi
) -> None:
    from chunking.settings import get_settings
    from functions.deps import get_store

    store = get_store()
    store.create_job("down", JobSpec(total_items=10, chunk_size=10), "local")
    store.start_job("down")
    bound = get_settings().chunk_max_resends
    event = {"name": "demo/process_chunk",
             "data": {"job_id": "down", "chunk_index": 0, "resend": bound}}  # fmt: skip
    handler = f"{APP_ID}-process-chunk-failure"
    response = drive_over_http(f"{app_server}/api/inngest", handler,
                               failed_run_of(event, "connection refused"))  # fmt: skip
    assert response.status_code == 200, response.text
    status = store.status("down")
    assert status is not None and (status.chunks_failed, status.chunks_resent) == (1, 0)
    assert status.failed_chunks[0].error == "run failed: connection refused"
    assert fake_inngest.named("demo/process_chunk") == []


def test_chunks_lost_with_their_failure_handler_run_again_once_the_app_is_back(
    app_server: str, fake_inngest: FakeInngestApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long outage: chunk 1's run began, then the app went down with it; chunks 2 and 3 never
    reached it. Every delivery of their runs fails, and so does every delivery of the runs'
    failure handler (the SDK's on_failure had just one). Once the app is back, the sweep's cron
    tick sends the lost chunks again and the job ends: nothing is lost."""
    from functions.deps import get_store
    from tests.support import free_port

    store = get_store()
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(store, "now", lambda: clock[0])
    store.create_job("long-outage", JobSpec(total_items=40, chunk_size=10), "local")
    store.start_job("long-outage")
    url, fn_id = f"{app_server}/api/inngest", f"{APP_ID}-process-chunk"

    def chunk(index: int) -> dict[str, Any]:
        return {
            "name": "demo/process_chunk",
            "data": {"job_id": "long-outage", "chunk_index": index},
        }

    assert drive_over_http(url, fn_id, chunk(0)).status_code == 200
    store.begin_attempt("long-outage", 1)  # its run began, then the app went down with it
    down = f"http://127.0.0.1:{free_port()}/api/inngest"
    for index in (1, 2, 3):
        for attempt in range(4):
            with pytest.raises(httpx.ConnectError):
                drive_over_http(down, fn_id, chunk(index), attempt=attempt)
        failed_run = failed_run_of(chunk(index), "Unable to reach SDK URL")
        for attempt in range(get_settings().failure_retries + 1):
            with pytest.raises(httpx.ConnectError):
                drive_over_http(down, f"{fn_id}-failure", failed_run, attempt=attempt)
    status = store.status("long-outage")
    assert status is not None and (status.status, status.chunks_succeeded) == ("running", 1)
    assert fake_inngest.named("demo/process_chunk") == []

    # The app is back. A tick before the job has been idle for SWEEP_IDLE_S sends nothing...
    tick = {"name": "inngest/scheduled.timer", "data": {"cron": "* * * * *"}}
    swept = drive_over_http(url, f"{APP_ID}-sweep-stalled-jobs", tick)
    assert swept.status_code == 200 and swept.json() == {"resent": 0, "recorded_failed": 0}
    # ... the first tick after it sends every lost chunk again, once.
    clock[0] += timedelta(seconds=get_settings().sweep_idle_s + 60)
    swept = drive_over_http(url, f"{APP_ID}-sweep-stalled-jobs", tick, run_id="tick-2")
    assert swept.status_code == 200 and swept.json() == {"resent": 3, "recorded_failed": 0}
    resent = fake_inngest.named("demo/process_chunk")
    assert [event["id"] for event in resent] == [
        f"long-outage-chunk-{index}-swept-1" for index in (1, 2, 3)
    ]
    for event in resent:
        done = drive_over_http(url, fn_id, event)
        assert done.status_code == 200 and done.json()["outcome"] == "succeeded", done.text
    status = store.status("long-outage")
    assert status is not None
    assert (status.status, status.chunks_succeeded, status.chunks_failed, status.chunks_resent) == (
        "succeeded", 4, 0, 3
    )  # fmt: skip
    chunk_1 = store.chunk("long-outage", 1)
    assert chunk_1 is not None
    assert [span.outcome for span in chunk_1.timeline] == ["lost", "succeeded"]
    assert len(fake_inngest.named("demo/finish_job")) == 1


def test_a_failure_handler_leaves_a_chunk_that_a_later_run_has_begun(
    app_server: str, fake_inngest: FakeInngestApi
) -> None:
    """The handler of a failed run, delivered late (its retries), finds the chunk begun again by
    a later run (the sweep's): that run owns it; recording it failed would end it wrongly."""
    from functions.deps import get_store

    store = get_store()
    store.create_job("late", JobSpec(total_items=10, chunk_size=10), "local")
    store.start_job("late")
    event = {"name": "demo/process_chunk", "data": {"job_id": "late", "chunk_index": 0}}
    failed_run = failed_run_of(event, "Unable to reach SDK URL")
    failed_run["ts"] = int(datetime.now(UTC).timestamp() * 1000) - 60_000  # failed a minute ago
    store.begin_attempt("late", 0)  # the later run began since
    response = drive_over_http(
        f"{app_server}/api/inngest", f"{APP_ID}-process-chunk-failure", failed_run
    )
    assert response.status_code == 200, response.text
    chunk = store.chunk("late", 0)
    assert chunk is not None and chunk.state == "running"
    # Had the chunk's latest run begun before the failure, the failure would be its own.
    failed_run["ts"] = int(datetime.now(UTC).timestamp() * 1000) + 1_000
    response = drive_over_http(
        f"{app_server}/api/inngest", f"{APP_ID}-process-chunk-failure", failed_run, run_id="r-2"
    )
    assert response.status_code == 200, response.text
    chunk = store.chunk("late", 0)
    assert chunk is not None and (chunk.state, chunk.error) == (
        "failed",
        "run failed: Unable to reach SDK URL",
    )


def test_a_start_that_gave_up_fails_a_job_it_had_not_started_only(app_server: str) -> None:
    """Before its job started, a start-job that gave up fails the job with the reason; after
    (planned and started, its fan-out cut short), the job goes on: the sweep of stalled jobs
    sends the chunks that were never sent."""
    from functions.deps import get_store

    store = get_store()
    store.create_job("unstarted", JobSpec(total_items=10, chunk_size=5), "local")
    store.create_job("cut-short", JobSpec(total_items=10, chunk_size=5), "local")
    store.start_job("cut-short")
    for run, job_id in enumerate(("unstarted", "cut-short")):
        failed_run = {
            "name": "inngest/function.failed",
            "data": {"function_id": f"{APP_ID}-start-job", "run_id": f"run-{run}",
                     "error": {"name": "Error", "message": "Unable to reach SDK URL"},
                     "event": {"name": "demo/start_job", "data": {"job_id": job_id}}},
        }  # fmt: skip
        response = drive_over_http(
            f"{app_server}/api/inngest", f"{APP_ID}-start-job-failure", failed_run, run_id=f"r{run}"
        )
        assert response.status_code == 200, response.text
    unstarted, cut_short = store.status("unstarted"), store.status("cut-short")
    assert unstarted is not None and cut_short is not None
    assert (unstarted.status, unstarted.error) == (
        "failed",
        "demo/start_job failed: Unable to reach SDK URL",
    )
    assert (cut_short.status, cut_short.error) == ("running", None)
