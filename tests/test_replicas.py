"""The local path as Inngest users deploy it: several app processes on one Postgres store.

Each app runs in its own process in production mode (INNGEST_DEV=0, signed requests), its
events going to the stand-in event API; Postgres is the real server the session starts. The
executor's calls are made over the SDK's HTTP protocol, signed as Inngest signs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from tests.postgres_server import PostgresServer
from tests.support import AppProcess, FakeInngestApi, drive_over_http

APP_ID = "long-jobs"
SIGNING_KEY = "signkey-prod-" + "ef" * 32
EVENT_KEY = "event-key-replicas"
API_KEY = "api-key-" + "12" * 16


def production_app(tmp_path: Path, store_url: str, workers: int = 1) -> AppProcess:
    """The app configured as the README's production section says, on a fresh schema."""
    from tests.conftest import FAKE_INNGEST_SERVER

    env = {
        "JOB_STORE_URL": store_url,
        "INNGEST_EVENT_KEY": EVENT_KEY,
        "API_KEY": API_KEY,
        "ALLOWED_HOSTS": "*",
        "SSE_POLL_INTERVAL_S": "0.05",
        "ITEM_DELAY_MS": "20",
    }
    return AppProcess(tmp_path, SIGNING_KEY, FAKE_INNGEST_SERVER.url, workers=workers, **env)


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_server: PostgresServer, fake_inngest: FakeInngestApi
) -> Iterator[tuple[AppProcess, AppProcess]]:
    url = postgres_server.url()
    one, two = production_app(tmp_path, url), production_app(tmp_path, url)
    with one as a, two as b:
        yield a, b


def run(app: AppProcess, fn: str, event: dict[str, Any]) -> Any:
    """One run of a function on `app`, as the executor drives it (signed). Each replica's is
    a run of its own (its own run id): the same signed request twice is refused as a replay,
    on any replica."""
    return drive_over_http(
        f"{app.url}/api/inngest", f"{APP_ID}-{fn}", event, signing_key=SIGNING_KEY,
        run_id=f"run-{app.port}",
    )  # fmt: skip


def stream(app: AppProcess, job_id: str) -> list[tuple[str, Any, str]]:
    """The job's progress stream from `app`, to its end: (event, data, id) each."""
    events = []
    headers = {"x-api-key": API_KEY}
    with (
        httpx.Client(base_url=app.url, headers=headers, timeout=30) as http,
        connect_sse(http, "GET", f"/jobs/{job_id}/events") as source,
    ):
        for event in source.iter_sse():
            events.append((event.event, event.json(), event.id))
            if event.event == "end":
                break
    return events


def test_two_replicas_given_the_same_chunks_at_once_count_each_once_and_finish_once(
    replicas: tuple[AppProcess, AppProcess], fake_inngest: FakeInngestApi
) -> None:
    a, b = replicas
    spec = {"job_id": "shared", "total_items": 60, "chunk_size": 5}
    accepted = httpx.post(f"{a.url}/jobs", json=spec, headers={"x-api-key": API_KEY})
    assert accepted.status_code == 202, accepted.text
    [start] = fake_inngest.named("demo/start_job")
    assert run(b, "start-job", start).status_code == 200  # the other replica fans out
    chunks = fake_inngest.named("demo/process_chunk")
    assert sorted(e["data"]["chunk_index"] for e in chunks) == list(range(12))

    # Every chunk delivered to both replicas at once, as a redelivery racing its first run.
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = [pool.submit(run, app, "process-chunk", e) for e in chunks for app in (a, b)]
        results = [r.result() for r in runs]
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    outcomes = [r.json() for r in results]
    for index in range(12):
        mine = [o for o in outcomes if o["chunk_index"] == index]
        assert sorted(o["recorded"] for o in mine) == [False, True], mine  # one write each
    status = httpx.get(f"{b.url}/jobs/shared", headers={"x-api-key": API_KEY}).json()
    assert status["status"] == "succeeded"
    assert (status["chunks_succeeded"], status["items_processed"]) == (12, 60)
    assert 12 <= status["attempts"] <= 24  # both deliveries may have begun the chunk

    # The job finished once: one finishing chunk, one finish event id (Inngest runs it once).
    finishers = [o["chunk_index"] for o in outcomes if o["recorded"] and o["job_finished"]]
    assert len(finishers) == 1
    assert {e["id"] for e in fake_inngest.named("demo/finish_job")} == {"shared-finish"}
    [finish] = fake_inngest.named("demo/finish_job")
    with ThreadPoolExecutor(max_workers=2) as pool:
        finished = list(pool.map(lambda app: run(app, "finish-job", finish), (a, b)))
    assert [r.json() for r in finished] == ["succeeded", "succeeded"]
    assert {e["id"] for e in fake_inngest.named("demo/job_completed")} == {"shared-completed"}

    # Either replica's stream shows every settlement once, numbered 1..12, then the end.
    for app in (a, b):
        events = stream(app, "shared")
        settled = [(data["chunk_index"], event_id) for kind, data, event_id in events
                   if kind == "chunk"]  # fmt: skip
        assert sorted(index for index, _ in settled) == list(range(12))
        assert sorted(int(event_id) for _, event_id in settled) == list(range(1, 13))
        assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded"


def test_the_production_configuration_runs_a_job_through_its_serve_endpoint(
    tmp_path: Path, postgres_server: PostgresServer, fake_inngest: FakeInngestApi
) -> None:
    """README "Run the local path in production": INNGEST_DEV=0, signing and event keys, the
    serve origin, several uvicorn workers, JOB_STORE_URL on Postgres, API_KEY."""
    with production_app(tmp_path, postgres_server.url(), workers=2) as app:
        workers = Path(f"/proc/{app.proc.pid}/task/{app.proc.pid}/children").read_text().split()
        assert len(workers) >= 2  # uvicorn's supervisor and its worker processes

        spec = {"job_id": "prod", "total_items": 20, "chunk_size": 5, "fail_chunks": [3]}
        assert httpx.post(f"{app.url}/jobs", json=spec).status_code == 401  # no API key
        accepted = httpx.post(f"{app.url}/jobs", json=spec, headers={"x-api-key": API_KEY})
        assert accepted.status_code == 202, accepted.text
        [start] = fake_inngest.named("demo/start_job")
        unsigned = drive_over_http(f"{app.url}/api/inngest", f"{APP_ID}-start-job", start)
        assert unsigned.status_code == 401  # the serve endpoint runs only what Inngest signed
        assert run(app, "start-job", start).status_code == 200

        answers = [run(app, "process-chunk", e) for e in fake_inngest.named("demo/process_chunk")]
        assert [r.status_code for r in answers] == [200, 200, 200, 500]
        assert answers[3].headers["x-inngest-no-retry"] == "true"  # a permanent failure
        [finish] = fake_inngest.named("demo/finish_job")
        assert run(app, "finish-job", finish).json() == "partial"
        [completed] = fake_inngest.named("demo/job_completed")
        assert run(app, "send-callback", completed).json() == "no callback_url"

        status = httpx.get(f"{app.url}/jobs/prod", headers={"x-api-key": API_KEY}).json()
        assert (status["status"], status["chunks_succeeded"], status["chunks_failed"]) == (
            "partial", 3, 1,
        )  # fmt: skip
        assert status["items_processed"] == 15
