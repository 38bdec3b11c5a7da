"""A third workload, from the tests folder alone: `stride`, whose every `stride`-th chunk fails
transiently on its first attempt. Registered when imported (WORKLOAD_MODULES names it)."""

from __future__ import annotations

from pydantic import Field

from chunking.errors import TransientError
from chunking.planning import Chunk
from chunking.status import JobRecord
from chunking.store import JobStore
from chunking.workload import ChunkResult, Workload, WorkloadFields, register


class StrideFields(WorkloadFields):
    stride: int = Field(ge=1, le=100, description="Every stride-th chunk fails once, first.")


class Stride(Workload):
    name = "stride"
    Fields = StrideFields

    async def run_chunk(
        self, store: JobStore, job: JobRecord, chunk: Chunk, attempt: int, budget_s: float | None
    ) -> ChunkResult:
        if chunk.index % StrideFields.of(job.spec).stride == 0 and attempt == 1:
            raise TransientError(f"chunk {chunk.index} is on the stride: its first attempt fails")
        return ChunkResult(items_processed=chunk.size)


register(Stride())
