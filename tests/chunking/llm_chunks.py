"""Reading an llm input as a job does: `build_index` over the whole file (the job's first
durable unit), then each chunk's items through the index (`chunk_items`, as a chunk does)."""

from __future__ import annotations

from workloads.llm.index import Indexed, build_index, chunk_items
from workloads.llm.input import Item


def build_all(uri: str, template: str | None, chunk_size: int, index_at: str) -> int:
    result = build_index(uri, template, chunk_size, index_at)
    assert isinstance(result, Indexed)
    return result.total_items


def chunks_of(
    uri: str, template: str | None, chunk_size: int, index_at: str, total: int
) -> list[list[Item]]:
    return [
        chunk_items(uri, template, index_at, c, first, min(chunk_size, total - first))
        for c, first in enumerate(range(0, total, chunk_size))
    ]


def job_items(uri: str, template: str | None, chunk_size: int, index_at: str) -> list[Item]:
    """Every item of the input, indexed then read chunk by chunk."""
    total = build_all(uri, template, chunk_size, index_at)
    chunks = chunks_of(uri, template, chunk_size, index_at, total)
    return [item for chunk in chunks for item in chunk]
