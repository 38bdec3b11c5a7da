from __future__ import annotations

import itertools
import random

import pytest

from chunking.planning import chunk_at, fan_out_batches, plan
from functions.events import FAN_OUT_BATCH


@pytest.mark.parametrize(
    ("total", "size"),
    [(1, 1), (500, 50), (501, 50), (49, 50), (7, 3), (100_000, 1), (10_000_000, 100_000)]
    + [
        (random.Random(seed).randint(1, 50_000), random.Random(-seed).randint(1, 999))
        for seed in range(20)
    ],
)
def test_plan_covers_every_item_exactly_once(total: int, size: int) -> None:
    chunks = list(plan(total, size))
    assert chunks[0].start == 0
    assert chunks[-1].end == total
    for before, after in itertools.pairwise(chunks):
        assert before.end == after.start  # no gap, no overlap
    assert all(0 < c.size <= size for c in chunks)
    assert sum(c.size for c in chunks) == total
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunk_at_rejects_indexes_outside_the_plan() -> None:
    assert chunk_at(100, 30, 3).size == 10
    with pytest.raises(IndexError, match="chunk_index 4"):
        chunk_at(100, 30, 4)
    with pytest.raises(IndexError):
        chunk_at(100, 30, -1)


def test_largest_job_fans_out_in_100_batches_of_1000() -> None:
    batches = list(fan_out_batches(100_000, FAN_OUT_BATCH))
    assert len(batches) == 100
    assert all(len(b) == 1000 for b in batches)
    assert [i for b in batches for i in b] == list(range(100_000))


def test_partial_last_batch() -> None:
    assert [len(b) for b in fan_out_batches(2_500, FAN_OUT_BATCH)] == [1000, 1000, 500]
