"""The simulate workload: `item_delay_ms` of sleep per item, failures injected by the spec."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from chunking.errors import PermanentError, TransientError
from chunking.planning import Chunk
from chunking.settings import get_settings
from chunking.spec import NumberKey, WholeNumber, chunk_indexes_in_range
from chunking.status import JobRecord
from chunking.store import JobStore
from chunking.workload import ChunkResult, Workload, WorkloadFields

ChunkIndex = Annotated[WholeNumber, Field(ge=0)]
# Failure injection is for demos and tests: a bound keeps every spec far inside one DynamoDB
# item (400 KB) and one request body (1 MB), the same on both paths.
MAX_INJECTED_CHUNKS = 10_000


class SimulateFields(WorkloadFields):
    """The simulate workload's own JobSpec fields."""

    item_delay_ms: WholeNumber = Field(
        default_factory=lambda: get_settings().item_delay_ms,
        ge=0,
        le=60_000,
        description="Work per item, in milliseconds of sleep (default ITEM_DELAY_MS).",
    )
    fail_chunks: list[ChunkIndex] = Field(
        default_factory=list,
        max_length=MAX_INJECTED_CHUNKS,
        description="Chunk indexes that always fail permanently.",
    )
    flaky_chunks: dict[
        Annotated[NumberKey, Field(ge=0)], Annotated[WholeNumber, Field(ge=1, le=100)]
    ] = Field(
        default_factory=dict,
        max_length=MAX_INJECTED_CHUNKS,
        description="Chunk index -> how many attempts fail transiently before one succeeds.",
    )

    @field_validator("fail_chunks", "flaky_chunks")
    @classmethod
    def _indexes_in_range(
        cls, value: list[int] | dict[int, int], info: ValidationInfo
    ) -> list[int] | dict[int, int]:
        chunk_indexes_in_range(value, info)
        return value


async def simulate(fields: SimulateFields, chunk: Chunk, attempt: int) -> ChunkResult:
    """Sleep `item_delay_ms` per item; fail as the spec's failure injection says.

    `attempt` is 1 for the first attempt at this chunk, as counted by the job store.
    """
    if chunk.index in fields.fail_chunks:
        raise PermanentError(f"chunk {chunk.index} is in fail_chunks (injected permanent failure)")
    flaky = fields.flaky_chunks.get(chunk.index, 0)
    if attempt <= flaky:
        raise TransientError(
            f"chunk {chunk.index} is flaky: attempt {attempt} of the first {flaky} fails"
        )
    if fields.item_delay_ms:
        for _ in range(chunk.size):
            await asyncio.sleep(fields.item_delay_ms / 1000)
    return ChunkResult(items_processed=chunk.size)


class Simulate(Workload):
    name = "simulate"
    Fields = SimulateFields

    async def run_chunk(
        self, store: JobStore, job: JobRecord, chunk: Chunk, attempt: int, budget_s: float | None
    ) -> ChunkResult:
        return await simulate(SimulateFields.of(job.spec), chunk, attempt)
