"""The llm workload's outputs: one JSONL file per chunk, merged into one in input order.

Layout under LLM_OUTPUT_URI (a local folder or an s3:// prefix):
    <job_id>/chunk-000000.jsonl ...   written from the job store as each chunk settles
    <job_id>/output.jsonl             every chunk's lines, in input order, once the job ends

A line is `{"id", "output", "usage": {"prompt_tokens", "completion_tokens"}, "latency_ms"}`,
plus `"error"` (and a null output) for an item the model could not answer. Items never reached
(a chunk that gave up) have no line; the status JSON lists those chunks.
Both writes are whole-file replacements of content derived from the store, so doing one twice
(a redelivered message, a retried step) gives the same file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from chunking.settings import get_settings
from chunking.status import ItemResult
from chunking.store import JobStore
from workloads.llm import blobs

MERGED_NAME = "output.jsonl"


def chunk_output_uri(job_id: str, chunk_index: int) -> str:
    return blobs.join(get_settings().llm_output_uri, job_id, f"chunk-{chunk_index:06d}.jsonl")


def merged_output_uri(job_id: str) -> str:
    return blobs.join(get_settings().llm_output_uri, job_id, MERGED_NAME)


def output_line(result: ItemResult) -> str:
    line: dict[str, object] = {
        "id": result.id,
        "output": result.output,
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
        },
        "latency_ms": result.latency_ms,
    }
    if result.error is not None:
        line["error"] = result.error
    return json.dumps(line, ensure_ascii=False)


def write_chunk_output(store: JobStore, job_id: str, chunk_index: int) -> str:
    """Write the chunk's kept results (in item order) to its own file; returns its URI."""
    uri = chunk_output_uri(job_id, chunk_index)
    results = store.item_results(job_id, chunk_index)
    blobs.write_lines(uri, (output_line(r) for r in results))
    return uri


def merge_outputs(job_id: str, total_chunks: int) -> str:
    """Concatenate the chunk files in chunk order into the job's output; returns its URI."""

    def lines() -> Iterator[str]:
        for index in range(total_chunks):
            try:
                yield from blobs.read_lines(chunk_output_uri(job_id, index))
            except FileNotFoundError:
                continue  # the chunk never settled with results; the status names it

    uri = merged_output_uri(job_id)
    blobs.write_lines(uri, lines())
    return uri
