"""The status JSON of the contract, computed from job and chunk records by one pure function."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from chunking import workload
from chunking.spec import JobSpec

Path = Literal["local", "cloud"]
JobState = Literal["queued", "running", "finished", "failed", "cancelled"]
ChunkState = Literal["running", "succeeded", "failed"]
JobStatusName = Literal["queued", "running", "succeeded", "partial", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "partial", "failed", "cancelled"})


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    path: Path
    spec: JobSpec
    state: JobState
    total_chunks: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None  # why the job as a whole failed (e.g. it could not be enqueued)
    settled_by: int | None = None  # the chunk whose outcome finished the job
    output_uri: str | None = None  # llm workload: the merged output, once it is written


@dataclass(frozen=True)
class ChunkRecord:
    index: int
    state: ChunkState
    attempts: int
    items: int = 0
    latency_ms: float | None = None  # of the attempt that settled the chunk
    error: str | None = None
    seq: int | None = None  # the settlement's number: the order in which the job's chunks settled


@dataclass(frozen=True)
class ItemResult:
    """One item's answer (or its permanent failure), kept so a retried chunk never asks twice."""

    index: int  # the item's position in the job's input
    chunk_index: int
    id: str
    output: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None


class LatencyMs(BaseModel):
    p50: float | None
    p95: float | None
    max: float | None


class FailedChunk(BaseModel):
    index: int
    error: str
    attempts: int


class ChunkUsage(BaseModel):
    index: int
    prompt_tokens: int
    completion_tokens: int
    items_failed: int


class Usage(BaseModel):
    """Model usage of a job's items (llm workload): tokens, failed items, estimated cost."""

    prompt_tokens: int
    completion_tokens: int
    items_failed: int
    est_cost_usd: float
    by_chunk: list[ChunkUsage]


class JobStatus(BaseModel):
    job_id: str
    path: Path
    status: JobStatusName
    total_items: int
    chunk_size: int
    total_chunks: int
    chunks_succeeded: int
    chunks_failed: int
    chunks_cancelled: int = 0  # a cancelled job's chunks that never ran (and never will)
    items_processed: int
    attempts: int
    retries: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    chunk_latency_ms: LatencyMs
    failed_chunks: list[FailedChunk]
    error: str | None = None
    usage: Usage | None = None  # null for workloads that call no model
    output_uri: str | None = None  # llm workload: the merged output file, once written


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


def overall_status(
    job: JobRecord, succeeded: int, failed: int, items_failed: int = 0
) -> JobStatusName:
    if job.state in ("queued", "running", "failed", "cancelled"):
        return job.state
    if failed == 0:
        # Every chunk ran, but an item the model refused is not success either.
        return "partial" if items_failed else "succeeded"
    return "partial" if succeeded else "failed"


def usage_from(items: list[ItemResult], prices_per_mtok: tuple[float, float]) -> Usage | None:
    """Totals and per-chunk figures from the kept item results; None when there are none."""
    if not items:
        return None
    by_chunk: dict[int, ChunkUsage] = {}
    for item in items:
        empty = ChunkUsage(
            index=item.chunk_index, prompt_tokens=0, completion_tokens=0, items_failed=0
        )
        entry = by_chunk.setdefault(item.chunk_index, empty)
        entry.prompt_tokens += item.prompt_tokens
        entry.completion_tokens += item.completion_tokens
        entry.items_failed += item.error is not None
    prompt = sum(c.prompt_tokens for c in by_chunk.values())
    completion = sum(c.completion_tokens for c in by_chunk.values())
    prompt_price, completion_price = prices_per_mtok
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        items_failed=sum(c.items_failed for c in by_chunk.values()),
        est_cost_usd=round((prompt * prompt_price + completion * completion_price) / 1e6, 6),
        by_chunk=[by_chunk[i] for i in sorted(by_chunk)],
    )


def build_status(
    job: JobRecord,
    chunks: list[ChunkRecord],
    now: datetime,
    usage: Usage | None = None,
) -> JobStatus:
    if job.state == "finished" and workload.of(job.spec).produces_output and not job.output_uri:
        # Every chunk has settled but the job's output is not written yet: a client that
        # waits for a final status must find the output there, so the job is still running.
        job = replace(job, state="running", finished_at=None)
    succeeded = [c for c in chunks if c.state == "succeeded"]
    failed = sorted((c for c in chunks if c.state == "failed"), key=lambda c: c.index)
    running = sum(c.state == "running" for c in chunks)  # cancelling lets these finish
    latencies = sorted(c.latency_ms for c in chunks if c.latency_ms is not None)
    attempts = sum(c.attempts for c in chunks)
    end = job.finished_at or (now if job.started_at else None)
    return JobStatus(
        job_id=job.job_id,
        path=job.path,
        status=overall_status(job, len(succeeded), len(failed), usage.items_failed if usage else 0),
        total_items=job.spec.total_items,
        chunk_size=job.spec.chunk_size,
        total_chunks=job.total_chunks,
        chunks_succeeded=len(succeeded),
        chunks_failed=len(failed),
        chunks_cancelled=(
            job.total_chunks - len(succeeded) - len(failed) - running
            if job.state == "cancelled"
            else 0
        ),
        items_processed=sum(c.items for c in succeeded),
        attempts=attempts,
        retries=sum(max(c.attempts - 1, 0) for c in chunks),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        duration_s=(
            round((end - job.started_at).total_seconds(), 3) if job.started_at and end else None
        ),
        chunk_latency_ms=LatencyMs(
            p50=percentile(latencies, 50),
            p95=percentile(latencies, 95),
            max=latencies[-1] if latencies else None,
        ),
        failed_chunks=[
            FailedChunk(index=c.index, error=c.error or "unknown", attempts=c.attempts)
            for c in failed
        ],
        error=job.error,
        usage=usage,
        output_uri=job.output_uri,
    )
