"""The metrics both paths emit, under the same names: what happened is counted here, where it
happens (the runner, the lifecycle); how it is exported is the adapter's `MetricsSink`.

Locally the app exports them for Prometheus at `/metrics` (functions/metrics.py); in the cloud
the worker writes them as CloudWatch metrics in Embedded Metric Format log lines (aws/worker):
no extra call either way. Without a sink (tools, tests) nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from chunking.status import TERMINAL_STATUSES, JobPath, model_cost_usd
from chunking.store import JobStore
from chunking.workload import ChunkUsage


@dataclass(frozen=True)
class Metric:
    kind: Literal["counter", "histogram"]
    unit: str  # CloudWatch's unit name
    labels: tuple[str, ...]  # Prometheus labels; CloudWatch dimensions
    help: str


METRICS: dict[str, Metric] = {
    "chunks_settled": Metric(
        "counter",
        "Count",
        ("path", "outcome"),
        "chunks settled (once each), by outcome: succeeded or failed",
    ),
    "chunk_attempts": Metric(
        "counter", "Count", ("path",), "attempts begun at chunks (first runs and retries)"
    ),
    "chunk_latency_ms": Metric(
        "histogram", "Milliseconds", ("path",), "latency of a chunk's attempt that succeeded"
    ),
    "jobs_submitted": Metric("counter", "Count", ("path",), "jobs accepted"),
    "jobs_retried": Metric(
        "counter", "Count", ("path",), "jobs retried (their failed chunks and items run again)"
    ),
    "jobs_ended": Metric(
        "counter",
        "Count",
        ("path", "status"),
        "jobs ended, by status: succeeded, partial, failed or cancelled",
    ),
    "model_tokens": Metric(
        "counter", "Count", ("path", "kind"), "model tokens, by kind: prompt or completion"
    ),
    "model_cost_usd": Metric("counter", "None", ("path",), "estimated model cost, in USD"),
}


class MetricsSink(Protocol):
    def add(self, name: str, value: float, labels: dict[str, str]) -> None:
        """Count `value` (a counter) or observe it (a histogram) for `name`, as METRICS says."""
        ...


_sink: MetricsSink | None = None


def use(sink: MetricsSink | None) -> None:
    """Where this process's metrics go: its adapter calls it once, at import (one sink per
    process; tests that import both paths' adapters set the one they read)."""
    global _sink
    _sink = sink


def _add(name: str, value: float, **labels: str) -> None:
    if _sink is not None:
        _sink.add(name, value, labels)


def chunk_begun(path: JobPath) -> None:
    _add("chunk_attempts", 1, path=path)


def chunk_settled(
    path: JobPath,
    outcome: str,
    latency_ms: float | None,
    usage: ChunkUsage | None,
    prices: tuple[float, float],
) -> None:
    """A chunk's outcome recorded (once: duplicates are not counted), with its model usage."""
    _add("chunks_settled", 1, path=path, outcome=outcome)
    if latency_ms is not None and outcome == "succeeded":
        _add("chunk_latency_ms", latency_ms, path=path)
    if usage and (usage.prompt_tokens or usage.completion_tokens):
        _add("model_tokens", usage.prompt_tokens, path=path, kind="prompt")
        _add("model_tokens", usage.completion_tokens, path=path, kind="completion")
        cost = model_cost_usd(usage.prompt_tokens, usage.completion_tokens, prices)
        _add("model_cost_usd", cost, path=path)


def job_submitted(path: JobPath) -> None:
    _add("jobs_submitted", 1, path=path)


def job_retried(path: JobPath) -> None:
    _add("jobs_retried", 1, path=path)


def job_ended(path: JobPath, status: str) -> None:
    _add("jobs_ended", 1, path=path, status=status)


def job_ended_in(store: JobStore, job_id: str) -> None:
    """Count the job ended with the status it now has, if final. Called once per job, where its
    status becomes final: the settlement that finished it, or (a workload that produces an
    output) the first finishing unit that wrote that output."""
    if _sink is None:
        return
    status = store.status(job_id)
    if status is not None and status.status in TERMINAL_STATUSES:
        job_ended(status.path, status.status)
