"""The cloud worker's metrics: chunking/metrics.py's names, written as CloudWatch Embedded
Metric Format log lines by Powertools (the local path's, for Prometheus: tests/test_metrics.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aws.local.resources import LocalStack
from aws.local.sqs_event_source import SqsEventSource


def emf_lines(captured: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in captured.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line]


def test_the_cloud_worker_writes_the_same_names_as_emf_log_lines(
    stack: LocalStack,
    sqs: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aws.worker.app import lambda_handler as worker
    from chunking import metrics
    from cloud.metrics import EmfSink
    from tests.aws.test_worker import start

    # As in the worker's own process (this one also imports the local app's adapter).
    monkeypatch.setattr(metrics, "_sink", EmfSink())

    start({"total_items": 30, "chunk_size": 10, "item_delay_ms": 0, "fail_chunks": [2]})
    capsys.readouterr()
    SqsEventSource(sqs, stack.queue_url, worker).drain()
    lines = emf_lines(capsys.readouterr().out)
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in lines:
        [directive] = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "LongJobs"
        [metric] = directive["Metrics"]
        dims = tuple(sorted((d, line[d]) for d in directive["Dimensions"][0] if d != "service"))
        key = (metric["Name"], dims)
        values = line[metric["Name"]]  # EMF: one value, or a list of them
        seen[key] = seen.get(key, 0) + sum(values if isinstance(values, list) else [values])
        if metric["Name"] == "chunk_latency_ms":
            assert metric["Unit"] == "Milliseconds"
    assert seen[("chunks_settled", (("outcome", "succeeded"), ("path", "cloud")))] == 2
    assert seen[("chunks_settled", (("outcome", "failed"), ("path", "cloud")))] == 1
    assert seen[("chunk_attempts", (("path", "cloud"),))] == 3
    assert ("chunk_latency_ms", (("path", "cloud"),)) in seen
    assert seen[("jobs_ended", (("path", "cloud"), ("status", "partial")))] == 1
