"""The simulate workload: `item_delay_ms` of sleep per item, failures injected by the spec."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import ClassVar

from chunking.errors import PermanentError, TransientError
from chunking.planning import Chunk
from chunking.spec import JobSpec
from chunking.status import JobRecord
from chunking.store import JobStore
from chunking.workload import ChunkResult, Workload


async def simulate(spec: JobSpec, chunk: Chunk, attempt: int) -> ChunkResult:
    """Sleep `item_delay_ms` per item; fail as the spec's failure injection says.

    `attempt` is 1 for the first attempt at this chunk, as counted by the job store.
    """
    if chunk.index in spec.fail_chunks:
        raise PermanentError(f"chunk {chunk.index} is in fail_chunks (injected permanent failure)")
    flaky = spec.flaky_chunks.get(chunk.index, 0)
    if attempt <= flaky:
        raise TransientError(
            f"chunk {chunk.index} is flaky: attempt {attempt} of the first {flaky} fails"
        )
    if spec.item_delay_ms:
        for _ in range(chunk.size):
            await asyncio.sleep(spec.item_delay_ms / 1000)
    return ChunkResult(items_processed=chunk.size)


class Simulate(Workload):
    name = "simulate"
    fields: ClassVar[frozenset[str]] = frozenset({"fail_chunks", "flaky_chunks"})
    required: ClassVar[Mapping[str, str]] = {}

    async def run_chunk(
        self, store: JobStore, job: JobRecord, chunk: Chunk, attempt: int, budget_s: float | None
    ) -> ChunkResult:
        return await simulate(job.spec, chunk, attempt)
