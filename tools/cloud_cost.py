"""Estimated AWS cost of one cloud-path run, from its status JSON and on-demand prices.

An estimate, labelled as one: it counts the requests and writes the design makes per chunk
attempt (see the README's "What a run costs"), not a bill.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Prices:
    """US-east-1 on-demand prices in USD; override them for your region and date."""

    lambda_gb_s: float = 0.0000166667
    lambda_request: float = 0.20 / 1e6
    sqs_request: float = 0.40 / 1e6
    dynamodb_write: float = 0.625 / 1e6
    dynamodb_read: float = 0.125 / 1e6
    api_request: float = 3.50 / 1e6


# Write units. Each attempt begins with the chunk and the job's tally in one transaction (2 x 2);
# each chunk settles once: its outcome, the job's tally and the settlement's numbered row (for
# the progress stream) in one transaction (3 x 2); the job is created, started and finished (3).
WRITES_PER_ATTEMPT = 4
WRITES_PER_SETTLEMENT = 6
WRITES_PER_JOB = 3
# Read units (consistent reads of small items, 1 each): an attempt and a settlement each read the
# chunk and the job's tally (2), a settlement also whether it finished the job (1). A status
# poll reads the job's row alone (its tally), whatever the number of chunks.
READS_PER_ATTEMPT = 2
READS_PER_SETTLEMENT = 3
READS_PER_POLL = 1


@dataclass(frozen=True)
class CostEstimate:
    lambda_invocations: int
    lambda_gb_s: float
    sqs_requests: int
    dynamodb_writes: int
    dynamodb_reads: float
    api_requests: int
    usd: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(
    status: dict[str, Any],
    *,
    status_polls: int,
    batch_size: int = 10,
    memory_mb: int = 256,
    prices: Prices | None = None,
) -> CostEstimate:
    prices = prices or Prices()
    attempts, chunks = int(status["attempts"]), int(status["total_chunks"])
    p95_s = (status["chunk_latency_ms"]["p95"] or 0) / 1000
    # Records of a batch run concurrently: an invocation lasts about as long as its slowest.
    worker_calls = math.ceil(attempts / batch_size)
    invocations = worker_calls + 1 + status_polls  # + starter + status
    gb_s = worker_calls * max(p95_s, 0.001) * memory_mb / 1024
    sends = math.ceil(chunks / 10)
    sqs = sends + 2 * worker_calls + int(status["retries"])  # receive + delete, + backoffs
    writes = WRITES_PER_ATTEMPT * attempts + WRITES_PER_SETTLEMENT * chunks + WRITES_PER_JOB
    reads = float(
        READS_PER_ATTEMPT * attempts + READS_PER_SETTLEMENT * chunks + READS_PER_POLL * status_polls
    )
    api = 1 + status_polls
    usd = (
        invocations * prices.lambda_request
        + gb_s * prices.lambda_gb_s
        + sqs * prices.sqs_request
        + writes * prices.dynamodb_write
        + reads * prices.dynamodb_read
        + api * prices.api_request
    )
    return CostEstimate(invocations, round(gb_s, 3), sqs, writes, reads, api, usd)
