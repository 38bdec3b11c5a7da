"""The cloud path's metrics: chunking/metrics.py's names as CloudWatch metrics, written by
Powertools Metrics in Embedded Metric Format. Each is one log line that CloudWatch turns into
the metric: no PutMetricData call, nothing to flush, nothing lost when an invocation ends."""

from __future__ import annotations

import os

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from chunking import metrics

# The template sets POWERTOOLS_METRICS_NAMESPACE; the dashboard reads the same.
NAMESPACE = "LongJobs"


class EmfSink:
    """A metrics.MetricsSink writing one EMF line per value, its labels as dimensions."""

    def add(self, name: str, value: float, labels: dict[str, str]) -> None:
        metric = metrics.METRICS[name]
        namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
        unit = MetricUnit(metric.unit)
        with single_metric(name=name, unit=unit, value=value, namespace=namespace) as one:
            for label in metric.labels:
                one.add_dimension(name=label, value=labels[label])
