"""The local path's metrics for Prometheus (the maintained client library), served by main.py
at `/metrics`: the names of chunking/metrics.py, prefixed `long_jobs_`.

Each app process counts its own: with several uvicorn workers or replicas, scrape each (or sum
them in Prometheus); counters start again at 0 when a process restarts, as Prometheus expects.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from chunking import metrics

PREFIX = "long_jobs_"
# Chunk latency buckets (ms): a chunk runs from milliseconds to its step budget (minutes).
LATENCY_BUCKETS_MS = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
)


class PrometheusSink:
    """A metrics.MetricsSink onto one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._metrics: dict[str, Counter | Histogram] = {}
        for name, metric in metrics.METRICS.items():
            full = PREFIX + name
            if metric.kind == "histogram":
                self._metrics[name] = Histogram(
                    full,
                    metric.help,
                    metric.labels,
                    registry=self.registry,
                    buckets=LATENCY_BUCKETS_MS,
                )
            else:
                self._metrics[name] = Counter(
                    full, metric.help, metric.labels, registry=self.registry
                )

    def add(self, name: str, value: float, labels: dict[str, str]) -> None:
        metric = self._metrics[name]
        if isinstance(metric, Histogram):
            metric.labels(**labels).observe(value)
        else:
            metric.labels(**labels).inc(value)


SINK = PrometheusSink()
