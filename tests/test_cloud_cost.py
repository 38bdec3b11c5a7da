"""The cloud cost estimate: what it counts, and that it grows with the work."""

from __future__ import annotations

from typing import Any

from tools.cloud_cost import WRITES_PER_ATTEMPT, Prices, estimate


def status(chunks: int, attempts: int, p95_ms: float, retries: int = 0) -> dict[str, Any]:
    return {"total_chunks": chunks, "attempts": attempts, "retries": retries,
            "chunk_latency_ms": {"p50": p95_ms, "p95": p95_ms, "max": p95_ms}}  # fmt: skip


def test_counts_requests_and_writes_per_attempt() -> None:
    cost = estimate(status(10, 12, 500, retries=2), status_polls=4, batch_size=10)
    assert cost.lambda_invocations == 2 + 1 + 4  # 2 worker batches, the starter, 4 polls
    assert cost.lambda_gb_s == round(2 * 0.5 * 256 / 1024, 3)
    assert cost.sqs_requests == 1 + 2 * 2 + 2  # one send batch, receive + delete, backoffs
    assert cost.dynamodb_writes == WRITES_PER_ATTEMPT * 12 + 2
    assert cost.api_requests == 5


def test_prices_are_applied_and_configurable() -> None:
    run = status(100, 100, 1000)
    default = estimate(run, status_polls=1)
    doubled = estimate(
        run, status_polls=1, prices=Prices(**{k: 2 * v for k, v in Prices().__dict__.items()})
    )
    assert doubled.usd == 2 * default.usd
    assert estimate(status(1000, 1000, 1000), status_polls=1).usd > default.usd
