"""Messages of the cloud path's chunk queue, and the recursive fan-out that keeps starts fast.

A small job is enqueued as one message per chunk. A large one is enqueued as a single *range*
message; the worker that receives a range splits it into at most RANGE_SPLIT smaller ranges, or
into chunk messages once it covers at most DIRECT_LIMIT chunks. So `POST /start` does the same
small amount of work for 500 items as for 10,000,000, and the expansion itself runs in parallel.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from chunking.spec import JOB_ID_PATTERN

DIRECT_LIMIT = 100  # chunks that one range expands into directly (10 SendMessageBatch calls)
RANGE_SPLIT = 10  # sub-ranges per range above that (one SendMessageBatch call)


class ChunkMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["chunk"] = "chunk"
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    chunk_index: int = Field(ge=0)
    # n > 0: the n-th run going on where one that ran out of budget stopped (a fresh message,
    # so its receive count, and with it the chunk's retries, starts again).
    continuation: int = Field(0, ge=0)
    # n > 0: the n-th look at a chunk waiting on its provider's batch (batch mode), sent as a
    # delayed message: no Lambda waits meanwhile.
    poll: int = Field(0, ge=0)


class PlanMessage(BaseModel):
    """Count (and index) a job's items, then start it: the job's first durable unit when its
    spec does not say how many items it has. `resume` goes on where the last one stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["plan"] = "plan"
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    resume: dict[str, int] | None = None


class FinishMessage(BaseModel):
    """Every chunk of the job has settled: leave its results behind (the llm workload's merged
    output), then announce it. Idempotent, so a redelivery is harmless."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["finish"] = "finish"
    job_id: str = Field(pattern=JOB_ID_PATTERN)


class RangeMessage(BaseModel):
    """Chunk indexes first <= i < stop of a job, still to be enqueued."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["range"] = "range"
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    first: int = Field(ge=0)
    stop: int = Field(gt=0)


class CallbackMessage(BaseModel):
    """Deliver the finished job's completion callback (retried like a chunk, on its own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["callback"] = "callback"
    job_id: str = Field(pattern=JOB_ID_PATTERN)


class StopMessage(BaseModel):
    """The job was cancelled: stop what its running chunks started outside (a batch-mode
    job's provider batches), a page of chunks after index `after`, then the next page's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["stop"] = "stop"
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    after: int = Field(-1, ge=-1)


class RetryMessage(BaseModel):
    """A job's retry (its `redrive`-th): a page of its chunks reopened (`phase` reopen) or
    sent again (`phase` send) after index `after`, then the next page's message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["retry"] = "retry"
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    redrive: int = Field(ge=1)
    phase: Literal["reopen", "send"] = "reopen"
    after: int = Field(-1, ge=-1)


QueueMessage = (
    ChunkMessage
    | RangeMessage
    | CallbackMessage
    | PlanMessage
    | FinishMessage
    | StopMessage
    | RetryMessage
)
_parser: TypeAdapter[QueueMessage] = TypeAdapter(
    Annotated[QueueMessage, Field(discriminator="kind")]
)


def parse_message(body: str) -> QueueMessage:
    """Raises pydantic.ValidationError for a body that is not one of our messages."""
    return _parser.validate_json(body)


def _chunks(job_id: str, first: int, stop: int) -> list[QueueMessage]:
    return [ChunkMessage(job_id=job_id, chunk_index=i) for i in range(first, stop)]


def initial_messages(job_id: str, total_chunks: int) -> list[QueueMessage]:
    if total_chunks <= DIRECT_LIMIT:
        return _chunks(job_id, 0, total_chunks)
    return [RangeMessage(job_id=job_id, first=0, stop=total_chunks)]


def expand(message: RangeMessage) -> list[QueueMessage]:
    size = message.stop - message.first
    if size <= DIRECT_LIMIT:
        return _chunks(message.job_id, message.first, message.stop)
    step = -(-size // RANGE_SPLIT)
    return [
        RangeMessage(job_id=message.job_id, first=lo, stop=min(lo + step, message.stop))
        for lo in range(message.first, message.stop, step)
    ]
