"""Planning: which items each chunk covers, and how chunk indexes are batched for fan-out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from chunking.spec import chunk_count


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # first item, inclusive
    end: int  # last item, exclusive

    @property
    def size(self) -> int:
        return self.end - self.start


def chunk_at(total_items: int, chunk_size: int, index: int) -> Chunk:
    """The chunk with this index; computed, so a worker never needs the whole plan."""
    if not 0 <= index < chunk_count(total_items, chunk_size):
        raise IndexError(f"chunk_index {index} is out of range for {total_items} items")
    start = index * chunk_size
    return Chunk(index, start, min(start + chunk_size, total_items))


def plan(total_items: int, chunk_size: int) -> Iterator[Chunk]:
    """Every chunk in order; together they cover each item exactly once."""
    for index in range(chunk_count(total_items, chunk_size)):
        yield chunk_at(total_items, chunk_size, index)


def fan_out_batches(total_chunks: int, batch: int) -> Iterator[range]:
    """Chunk index ranges of at most `batch` indexes (the orchestrator's limit per send)."""
    for lo in range(0, total_chunks, batch):
        yield range(lo, min(lo + batch, total_chunks))
