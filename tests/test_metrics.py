"""The local path's metrics at /metrics, for Prometheus (chunking/metrics.py's names; the cloud
worker's, as EMF log lines: tests/aws/test_metrics_emf.py)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import FakeInngestApi, replay, run_finishes


def scrape(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_the_local_app_counts_chunks_attempts_latency_and_jobs_for_prometheus(
    api: httpx.Client, fake_inngest: FakeInngestApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunking import metrics
    from functions.metrics import SINK
    from functions.process_chunk import process_chunk
    from functions.start_job import start_job

    # As in the app's own process (this one also imports the cloud path's handlers).
    monkeypatch.setattr(metrics, "_sink", SINK)

    before = scrape(api)
    spec = {"total_items": 40, "chunk_size": 10, "item_delay_ms": 0,
            "flaky_chunks": {"1": 1}, "fail_chunks": [3]}  # fmt: skip
    assert api.post("/jobs", json=spec).status_code == 202
    [start] = fake_inngest.named("demo/start_job")
    replay(start_job, start)
    for event in fake_inngest.named("demo/process_chunk"):
        replay(process_chunk, event)
    run_finishes(fake_inngest)
    after = scrape(api)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted({"path": "local", **labels}.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("long_jobs_jobs_submitted_total") == 1
    assert grew("long_jobs_chunks_settled_total", outcome="succeeded") == 3
    assert grew("long_jobs_chunks_settled_total", outcome="failed") == 1
    assert grew("long_jobs_chunk_attempts_total") == 5  # chunk 1 twice
    assert grew("long_jobs_chunk_latency_ms_count") == 3
    assert grew("long_jobs_jobs_ended_total", status="partial") == 1
