"""The cloud cost estimate: what it counts, and that it grows with the work."""

from __future__ import annotations

from typing import Any

from tools.cloud_cost import (
    READS_PER_ATTEMPT,
    READS_PER_POLL,
    READS_PER_SETTLEMENT,
    WRITES_PER_ATTEMPT,
    WRITES_PER_JOB,
    WRITES_PER_SETTLEMENT,
    Prices,
    estimate,
)


def status(chunks: int, attempts: int, p95_ms: float, retries: int = 0) -> dict[str, Any]:
    return {"total_chunks": chunks, "attempts": attempts, "retries": retries,
            "chunk_latency_ms": {"p50": p95_ms, "p95": p95_ms, "max": p95_ms}}  # fmt: skip


def test_counts_requests_and_writes_per_attempt() -> None:
    cost = estimate(status(10, 12, 500, retries=2), status_polls=4, batch_size=10)
    assert cost.lambda_invocations == 2 + 1 + 4  # 2 worker batches, the starter, 4 polls
    assert cost.lambda_gb_s == round(2 * 0.5 * 256 / 1024, 3)
    assert cost.sqs_requests == 1 + 2 * 2 + 2  # one send batch, receive + delete, backoffs
    assert (
        cost.dynamodb_writes
        == WRITES_PER_ATTEMPT * 12 + WRITES_PER_SETTLEMENT * 10 + WRITES_PER_JOB
    )
    assert (
        cost.dynamodb_reads
        == READS_PER_ATTEMPT * 12 + READS_PER_SETTLEMENT * 10 + 4 * READS_PER_POLL
    )
    assert cost.api_requests == 5


def test_a_status_poll_costs_the_same_whatever_the_number_of_chunks() -> None:
    small, large = status(10, 10, 500), status(100_000, 100_000, 500)
    polls = [estimate(s, status_polls=p).dynamodb_reads for s in (small, large) for p in (1, 101)]
    assert polls[1] - polls[0] == polls[3] - polls[2] == 100 * READS_PER_POLL


def test_prices_are_applied_and_configurable() -> None:
    run = status(100, 100, 1000)
    default = estimate(run, status_polls=1)
    doubled = estimate(
        run, status_polls=1, prices=Prices(**{k: 2 * v for k, v in Prices().__dict__.items()})
    )
    assert doubled.usd == 2 * default.usd
    assert estimate(status(1000, 1000, 1000), status_polls=1).usd > default.usd
