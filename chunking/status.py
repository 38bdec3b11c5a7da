"""The status JSON of the contract, computed from job and chunk records by one pure function."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from chunking import workload
from chunking.latency import LatencySummary
from chunking.spec import JobSpec

# Which of the two ways a job runs: the status JSON's `path`.
JobPath = Literal["local", "cloud"]
JobState = Literal["queued", "running", "finished", "failed", "cancelled"]
ChunkState = Literal["running", "succeeded", "failed"]
JobStatusName = Literal["queued", "running", "succeeded", "partial", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "partial", "failed", "cancelled"})


# The first failed chunks a status lists (the total is `chunks_failed`; every one, with its
# error, is on the chunks endpoint): a status read stays one row however many chunks failed.
FAILED_HEAD_MAX = 20
FAILED_ERROR_MAX_CHARS = 1_000


class FailedChunk(BaseModel):
    index: int
    error: str
    attempts: int


@dataclass(frozen=True)
class Tally:
    """A job's running totals, kept in its row by the same write that settles a chunk (or
    begins an attempt): a status is read from the job's row alone, whatever its size."""

    chunks_settled: int = 0
    chunks_succeeded: int = 0
    chunks_failed: int = 0
    chunks_running: int = 0  # begun (or reopened) and not settled
    chunks_begun: int = 0  # with at least one attempt: retries = attempts - chunks_begun
    attempts: int = 0
    items_processed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    items_failed: int = 0
    chunks_resent: int = 0  # fresh runs of chunks whose deliveries all failed before they began
    rate_limited: int = 0  # the model's 429s
    rate_wait_ms: int = 0  # time its requests waited for the model's shared budget (or a 429)
    batches: int = 0  # batch mode: provider batches created
    batch_requests: int = 0  # requests sent in them (a resubmitted one again)
    batch_done: int = 0  # requests the provider has finished, as its latest polls said
    batch_resubmitted: int = 0  # requests sent again in a new batch (the provider let expire)
    batch_requeued: int = 0  # batches refused for the provider's queue limit, sent again later
    items_lost: int = 0  # items with no answer in chunks that failed whole
    redrives: int = 0  # times the job was retried
    spent_nano: int = 0  # a capped job's spend so far, in billionths of a USD
    headroom_nano: int = 0  # what is left of its cap once its calls in flight are held
    latency: LatencySummary = field(default_factory=LatencySummary)
    failed_head: tuple[FailedChunk, ...] = ()  # the first FAILED_HEAD_MAX to fail
    events_seq: int = 0  # the last settlement's number
    version: int = 0  # moved on by every write that recomputes the summaries above


@dataclass(frozen=True)
class Liveness:
    """What the sweep of stalled jobs (`recovery.sweep`) knows of a running job: when it last
    showed life (an attempt begun or a chunk settled; to the minute), and its sweeps so far."""

    active_at: datetime | None = None  # None once the job has ended
    passes: int = 0  # sweeps begun over the job's chunks
    after: int | None = None  # a sweep in progress: the last chunk index it examined
    swept_at: datetime | None = None  # when the latest sweep began


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    path: JobPath
    spec: JobSpec
    state: JobState
    total_chunks: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None  # why the job as a whole failed (e.g. it could not be enqueued)
    # What stopped it early (its spend cap, its failure threshold); `error` says how.
    stopped_by: str | None = None
    settled_by: int | None = None  # the chunk whose outcome finished the job
    output_uri: str | None = None  # llm workload: the merged output, once it is written
    errors_uri: str | None = None  # llm workload: its failed items, written with the output
    # Items as planned: the spec's, or (a workload that counts its input) 0 until counted.
    total_items: int = 0
    tally: Tally = field(default_factory=Tally)
    liveness: Liveness = field(default_factory=Liveness)


@dataclass(frozen=True)
class Progress:
    """A job's counts as of one settlement: what the progress stream's `chunk` event carries."""

    chunks_settled: int
    chunks_succeeded: int
    chunks_failed: int
    items_processed: int


SpanOutcome = Literal["running", "succeeded", "failed", "retried", "continued", "lost", "waiting"]
# Spans a chunk keeps (the latest): attempts are bounded by the retries, continuations by
# CHUNK_MAX_CONTINUATIONS, so a chunk's row stays small whatever happened to it.
TIMELINE_MAX = 64
SPAN_ERROR_MAX_CHARS = 300


class Span(BaseModel):
    """One run of a chunk: its attempt number, when it began and ended, and how it ended
    (`retried`: a retryable failure; `continued`: out of budget, going on in a fresh run;
    `lost`: it never said, e.g. its process was killed, and a later run began; `waiting`: on
    its provider's batch, polled by short runs that this one span covers)."""

    attempt: int
    started_at: datetime
    ended_at: datetime | None
    outcome: SpanOutcome
    error: str | None = None


@dataclass(frozen=True)
class ChunkRecord:
    index: int
    state: ChunkState
    attempts: int
    items: int = 0
    latency_ms: float | None = None  # of the attempt that settled the chunk
    error: str | None = None
    seq: int | None = None  # the settlement's number: the order in which the job's chunks settled
    prompt_tokens: int = 0
    completion_tokens: int = 0
    items_failed: int = 0
    continuations: int = 0  # runs that went on where one that ran out of budget stopped
    progress: Progress | None = None  # the job's counts as of this chunk's settlement
    timeline: tuple[Span, ...] = ()  # its runs, oldest first (the last TIMELINE_MAX)
    batch: dict[str, Any] | None = None  # batch mode: its provider batch (workloads.llm.batch)


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
    # An output too big to keep in a store's row lives in the data bucket (or folder) instead.
    output_uri: str | None = None
    attempts: int = 1  # times the model was asked (twice: its first answer missed the schema)


class LatencyMs(BaseModel):
    p50: float | None
    p95: float | None
    max: float | None


class Usage(BaseModel):
    """Model usage of a job's items (llm workload): tokens, failed items, estimated cost."""

    prompt_tokens: int
    completion_tokens: int
    items_failed: int
    est_cost_usd: float
    # Rate limiting: the 429s the model answered (none spends a retry) and the time requests
    # waited for the model's shared budget or a 429's retry-after, summed over requests.
    rate_limited: int = 0
    rate_wait_s: float = 0.0
    # Batch mode: est_cost_usd is at the batch price; this, the same tokens at full price.
    realtime_cost_usd: float | None = None
    # A capped job: its cap, and its spend as each answer arrives (est_cost_usd counts settled
    # chunks only), and what its calls in flight hold of the cap.
    max_cost_usd: float | None = None
    spent_usd: float | None = None
    in_flight_usd: float | None = None


class BatchProgress(BaseModel):
    """Batch mode: the job's provider batches, from its tally (its polls' latest counts)."""

    batches: int  # provider batches created (a resubmission or a requeue is one more)
    requests_submitted: int  # requests sent in them (a resubmitted one again)
    requests_done: int  # requests the provider has finished (answered or failed)
    requests_resubmitted: int  # sent again in a new batch: the provider let them expire
    requeued: int  # batches the provider refused for its queue limit, sent again later
    discount: float  # the share of the price saved


class JobStatus(BaseModel):
    job_id: str
    path: JobPath
    status: JobStatusName
    total_items: int
    chunk_size: int
    total_chunks: int
    chunks_succeeded: int
    chunks_failed: int
    chunks_cancelled: int = 0  # a cancelled job's chunks that never ran (and never will)
    # Runs sent again because every delivery of a chunk's run failed before the chunk began
    # (the app was unreachable): an outage does not spend a chunk's retries.
    chunks_resent: int = 0
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
    # Stopped early by its spend cap (`max_cost_usd`) or its failure threshold
    # (`max_failed_items`); `error` says how. Chunks not run then are failed "not run".
    stopped_by: str | None = None
    # Items with no answer: failed ones, and those of chunks that failed whole.
    items_failed: int = 0
    max_failed_items: int | None = None  # the failure threshold, as a count of items
    redrives: int = 0  # times the job was retried (POST /jobs/{id}/retry, a DLQ redrive)
    usage: Usage | None = None  # null for workloads that call no model
    batch: BatchProgress | None = None  # null unless the job goes through a batch API
    output_uri: str | None = None  # llm workload: the merged output file, once written
    errors_uri: str | None = None  # llm workload: one line per failed item; null: none failed


def overall_status(
    job: JobRecord, succeeded: int, failed: int, items_failed: int = 0
) -> JobStatusName:
    if job.state in ("queued", "running", "failed", "cancelled"):
        return job.state
    return finished_status(succeeded, failed, items_failed)


def finished_status(succeeded: int, failed: int, items_failed: int = 0) -> JobStatusName:
    """The status of a job whose chunks have all settled, from how they did."""
    if failed == 0:
        # Every chunk ran, but an item the model refused is not success either.
        return "partial" if items_failed else "succeeded"
    return "partial" if succeeded else "failed"


def model_cost_usd(
    prompt_tokens: int, completion_tokens: int, prices_per_mtok: tuple[float, float]
) -> float:
    """The estimated model cost of these tokens, at USD per million tokens (prompt, completion)."""
    prompt_price, completion_price = prices_per_mtok
    return (prompt_tokens * prompt_price + completion_tokens * completion_price) / 1e6


def usage_of(job: JobRecord, prices_per_mtok: tuple[float, float]) -> Usage | None:
    """The job's model usage and estimated cost; None for a workload that calls no model."""
    if not workload.of(job.spec).reports_usage:
        return None
    tally = job.tally
    cost = model_cost_usd(tally.prompt_tokens, tally.completion_tokens, prices_per_mtok)
    discount = workload.of(job.spec).batch_discount(job.spec)
    cap = job.spec.max_cost_usd
    spent = tally.spent_nano / 1e9
    return Usage(
        prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens,
        items_failed=tally.items_failed,
        est_cost_usd=round(cost * (1 - (discount or 0)), 6),
        rate_limited=tally.rate_limited,
        rate_wait_s=round(tally.rate_wait_ms / 1000, 3),
        realtime_cost_usd=None if discount is None else round(cost, 6),
        max_cost_usd=cap,
        spent_usd=None if cap is None else round(spent, 9),
        in_flight_usd=None if cap is None else round(cap - spent - tally.headroom_nano / 1e9, 9),
    )


def batch_progress(job: JobRecord) -> BatchProgress | None:
    discount = workload.of(job.spec).batch_discount(job.spec)
    if discount is None:
        return None
    tally = job.tally
    return BatchProgress(
        batches=tally.batches,
        requests_submitted=tally.batch_requests,
        requests_done=tally.batch_done,
        requests_resubmitted=tally.batch_resubmitted,
        requeued=tally.batch_requeued,
        discount=discount,
    )


def build_status(job: JobRecord, now: datetime, prices_per_mtok: tuple[float, float]) -> JobStatus:
    """The status JSON, from the job's record alone (its tally): no chunk or item is read."""
    tally = job.tally
    status = overall_status(job, tally.chunks_succeeded, tally.chunks_failed, tally.items_failed)
    if status == "partial" and job.stopped_by == "max_failed_items":
        status = "failed"  # stopped early as broken: what it answered is kept all the same
    elif status == "failed" and job.stopped_by == "max_cost_usd" and tally.spent_nano:
        status = "partial"  # its chunks stopped mid-way, but what it paid for is answered
    if job.state == "finished" and workload.of(job.spec).produces_output and not job.output_uri:
        if job.error is None or job.stopped_by:  # a stopped job's error says why it stopped
            # Every chunk has settled but the job's output is not written yet: a client that
            # waits for a final status must find the output there, so the job is still running.
            job = replace(job, state="running", finished_at=None)
            status = "running"
        else:
            status = "failed"  # its finishing unit gave up: `error` says why
    usage = usage_of(job, prices_per_mtok)
    end = job.finished_at or (now if job.started_at else None)
    unsettled = job.total_chunks - tally.chunks_succeeded - tally.chunks_failed
    return JobStatus(
        job_id=job.job_id,
        path=job.path,
        status=status,
        total_items=job.total_items,
        chunk_size=job.spec.chunk_size,
        total_chunks=job.total_chunks,
        chunks_succeeded=tally.chunks_succeeded,
        chunks_failed=tally.chunks_failed,
        # Cancelling lets the running chunks finish: those are not cancelled.
        chunks_cancelled=unsettled - tally.chunks_running if job.state == "cancelled" else 0,
        chunks_resent=tally.chunks_resent,
        items_processed=tally.items_processed,
        attempts=tally.attempts,
        retries=tally.attempts - tally.chunks_begun,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        duration_s=(
            round((end - job.started_at).total_seconds(), 3) if job.started_at and end else None
        ),
        chunk_latency_ms=LatencyMs(
            p50=tally.latency.quantile(50),
            p95=tally.latency.quantile(95),
            max=tally.latency.max,
        ),
        failed_chunks=sorted(tally.failed_head, key=lambda c: c.index),
        error=job.error,
        stopped_by=job.stopped_by,
        items_failed=tally.items_failed + tally.items_lost,
        max_failed_items=job.spec.failed_items_limit(job.total_items),
        redrives=tally.redrives,
        usage=usage,
        batch=batch_progress(job),
        output_uri=job.output_uri,
        errors_uri=job.errors_uri,
    )


def _plain_decimal(value: Any) -> Any:
    # A query's number is ASCII digits, a leading minus at most: int() would also take "1_0",
    # "+5", " 5" and other scripts' digits, so a typo would be read as some other number.
    if isinstance(value, str):
        if not re.fullmatch(r"-?[0-9]{1,10}", value):
            raise ValueError("must be a whole number in plain decimal digits")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number")
    return value


# A whole number in a query string (or a path segment).
QueryInt = Annotated[int, BeforeValidator(_plain_decimal)]

MAX_CHUNK_PAGE = 1_000
MAX_JOB_LIST = 200


class ChunkQuery(BaseModel):
    """`GET /jobs/{job_id}/chunks`' query, on both APIs: chunks above index `after` (in
    `state`), `limit` of them."""

    model_config = ConfigDict(extra="forbid")
    state: ChunkState | None = None
    after: QueryInt = Field(-1, ge=-1, le=10_000_000)
    limit: QueryInt = Field(100, ge=1, le=MAX_CHUNK_PAGE)


class JobListQuery(BaseModel):
    """`GET /jobs`' query, on both APIs: the `limit` most recent jobs."""

    model_config = ConfigDict(extra="forbid")
    limit: QueryInt = Field(20, ge=1, le=MAX_JOB_LIST)


class ChunkBatch(BaseModel):
    """A chunk's provider batch, as its latest poll saw it (batch mode)."""

    id: str | None = None  # null between batches (being submitted, or resubmitted)
    status: str | None = None  # the provider's: validating, in_progress, ..., completed
    round: int = 1  # 1, then one more per resubmission of what the provider let expire
    total: int = 0  # request counts, the provider's
    completed: int = 0
    failed: int = 0
    resubmitted: int = 0  # requests of this chunk sent again
    requeued: int = 0  # times refused for the provider's queue limit
    polls: int = 0
    error: str | None = None  # the provider's reason, when it refused the batch


class ChunkInfo(BaseModel):
    index: int
    state: ChunkState
    attempts: int
    continuations: int
    items: int
    latency_ms: float | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    items_failed: int
    timeline: list[Span]
    batch: ChunkBatch | None = None  # batch mode: its provider batch


class ChunkPage(BaseModel):
    job_id: str
    chunks: list[ChunkInfo]
    next_after: int | None  # pass as `after` for the next page; null on the last one


def chunk_page(job_id: str, records: list[ChunkRecord], limit: int) -> ChunkPage:
    fields = set(ChunkInfo.model_fields) - {"batch"}
    chunks = [
        ChunkInfo(
            **{k: v for k, v in vars(c).items() if k in fields},
            batch=ChunkBatch.model_validate(c.batch) if c.batch else None,
        )
        for c in records
    ]
    full = len(chunks) == limit
    return ChunkPage(job_id=job_id, chunks=chunks, next_after=chunks[-1].index if full else None)


MAX_ITEM_PAGE = 1_000


class ItemQuery(BaseModel):
    """`GET /jobs/{job_id}/chunks/{index}/items`' query, on both APIs: the chunk's items
    above item index `after` (an index in the job's input), `limit` of them."""

    model_config = ConfigDict(extra="forbid")
    after: QueryInt = Field(-1, ge=-1, le=10_000_000)
    limit: QueryInt = Field(100, ge=1, le=MAX_ITEM_PAGE)


class ItemInfo(BaseModel):
    """One item's answer, or why it has none."""

    index: int  # its position in the job's input
    id: str
    output: str | None  # null when it failed, or when its output is too big for a row:
    output_uri: str | None  # then it is here (the data bucket or folder)
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float | None


class ItemPage(BaseModel):
    job_id: str
    chunk_index: int
    items: list[ItemInfo]  # the items answered (or failed) so far, in index order
    next_after: int | None  # pass as `after` for the next page; null on the last one


def item_page(
    job_id: str, chunk_index: int, results: list[ItemResult], after: int, limit: int
) -> ItemPage:
    """A page of a chunk's kept results (all of them read: a chunk is O(its own items))."""
    fields = set(ItemInfo.model_fields)
    shown = [r for r in results if r.index > after][: limit + 1]
    items = [ItemInfo(**{k: v for k, v in vars(r).items() if k in fields}) for r in shown[:limit]]
    more = len(shown) > limit
    return ItemPage(
        job_id=job_id,
        chunk_index=chunk_index,
        items=items,
        next_after=items[-1].index if more else None,
    )


def no_such_chunk(job: JobRecord | None, job_id: str, chunk_index: int) -> str | None:
    """Why the items endpoint answers 404 (no such job, or no such chunk in it), or None."""
    if job is None:
        return f"no job with job_id {job_id!r}"
    if not 0 <= chunk_index < job.total_chunks:
        return f"job {job_id!r} has no chunk {chunk_index} (it has {job.total_chunks})"
    return None
