"""Workloads: the work one chunk does. Async, so the local path's event loop never blocks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from chunking.errors import PermanentError, TransientError
from chunking.planning import Chunk
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import JobRecord
from chunking.store import JobStore
from workloads.llm.outputs import merge_outputs, write_chunk_output
from workloads.llm.workload import run_llm_chunk

SETTLE_MARGIN_S = 5.0  # of an llm attempt's budget, kept for writing its outputs and outcome


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


async def run_chunk(
    store: JobStore, job: JobRecord, chunk: Chunk, attempt: int, budget_s: float | None
) -> ChunkResult:
    """Dispatch on the job's workload. `budget_s`: what the attempt may spend, if bounded."""
    if job.spec.workload == "llm":
        # The llm workload stops itself in time (keeping its answers): leave room to settle.
        budget = budget_s if budget_s is not None else get_settings().inngest_step_budget_s
        margin = min(SETTLE_MARGIN_S, budget * 0.1)
        result = await run_llm_chunk(store, job.job_id, job.spec, chunk, budget_s=budget - margin)
        return ChunkResult(items_processed=result.items_processed)
    return await simulate(job.spec, chunk, attempt)


def before_settle(store: JobStore, job: JobRecord, chunk_index: int) -> None:
    """Blocking: what a chunk leaves behind before its outcome is recorded, whatever it is."""
    if job.spec.workload == "llm":
        write_chunk_output(store, job.job_id, chunk_index)


def after_job_finished(store: JobStore, job: JobRecord) -> None:
    """Blocking: what a finished job leaves behind. Runs again on a redelivery: idempotent."""
    if job.spec.workload == "llm" and job.output_uri is None:
        store.set_output_uri(job.job_id, merge_outputs(job.job_id, job.total_chunks))
