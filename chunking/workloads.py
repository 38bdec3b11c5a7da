"""Workloads: the work one chunk does. Async, so the local path's event loop never blocks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from chunking.errors import PermanentError, TransientError
from chunking.planning import Chunk
from chunking.spec import JobSpec


@dataclass(frozen=True)
class ChunkResult:
    items_processed: int


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


async def run_chunk(spec: JobSpec, chunk: Chunk, attempt: int) -> ChunkResult:
    """Dispatch on `spec.workload`."""
    return await simulate(spec, chunk, attempt)
