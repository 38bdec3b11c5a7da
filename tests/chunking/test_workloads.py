from __future__ import annotations

import asyncio
import time

import pytest

from chunking.errors import PermanentError, TransientError
from chunking.planning import chunk_at
from chunking.spec import JobSpec
from workloads.simulate import SimulateFields, simulate


def run(spec: JobSpec, index: int, attempt: int = 1) -> int:
    chunk = chunk_at(spec.total_items, spec.chunk_size, index)
    return asyncio.run(simulate(SimulateFields.of(spec), chunk, attempt)).items_processed


def test_simulate_processes_the_chunk_items() -> None:
    spec = JobSpec(total_items=25, chunk_size=10, item_delay_ms=0)
    assert [run(spec, i) for i in range(3)] == [10, 10, 5]


def test_simulate_waits_per_item() -> None:
    spec = JobSpec(total_items=10, chunk_size=10, item_delay_ms=5)
    started = time.perf_counter()
    run(spec, 0)
    assert time.perf_counter() - started >= 0.05


def test_fail_chunks_fail_permanently_on_every_attempt() -> None:
    spec = JobSpec(total_items=30, chunk_size=10, item_delay_ms=0, fail_chunks=[1])
    for attempt in (1, 2, 5):
        with pytest.raises(PermanentError, match="chunk 1"):
            run(spec, 1, attempt)
    assert run(spec, 0) == 10


def test_flaky_chunks_fail_transiently_then_succeed() -> None:
    spec = JobSpec(total_items=30, chunk_size=10, item_delay_ms=0, flaky_chunks={2: 2})
    for attempt in (1, 2):
        with pytest.raises(TransientError):
            run(spec, 2, attempt)
    assert run(spec, 2, 3) == 10
