"""The llm workload's file of what failed: one JSONL line per failed item, in input order, so a
user can fix exactly those lines and submit them again.

A line is `{"id", "input", "error", "attempts"}`: `input` the item's line of the input as an
object, `attempts` the times the model was asked (an item of a chunk that failed as a whole,
never answered: the chunk's attempts, and the chunk's error).

Layout under LLM_OUTPUT_URI, beside the outputs (workloads.llm.outputs):
    <job_id>/chunk-000003.errors.jsonl   a chunk's failed items, written as it settles
    <job_id>/errors.jsonl                every chunk's, in input order, once the job ends

Never more than one chunk's failures in memory: each chunk writes its own file as it settles
(reading its own bytes of the input, and only when something failed); the finishing unit
writes again the files of the chunks that failed as a whole, adding their unanswered items, a
page of chunks at a time, then streams the files into one (`merge_files`), as the output.
"""

from __future__ import annotations

import json

from chunking.planning import chunk_at
from chunking.settings import get_settings
from chunking.status import ChunkRecord, ItemResult, JobRecord
from chunking.store import JobStore
from workloads.llm import blobs
from workloads.llm.fields import LlmFields
from workloads.llm.index import chunk_lines, index_uri
from workloads.llm.input import InputError, Item
from workloads.llm.merge import merge_files

ERRORS_NAME = "errors.jsonl"
CHUNKS_PAGE = 1_000  # chunk records the finishing unit reads at a time, looking for failed ones


def chunk_errors_uri(job_id: str, chunk_index: int) -> str:
    name = f"chunk-{chunk_index:06d}.errors.jsonl"
    return blobs.join(get_settings().llm_output_uri, job_id, name)


def merged_errors_uri(job_id: str) -> str:
    return blobs.join(get_settings().llm_output_uri, job_id, ERRORS_NAME)


def _input_lines(job: JobRecord, chunk_index: int) -> list[tuple[Item, str | None]]:
    """The chunk's items with their lines of the input (its own bytes, through the index);
    without the lines (None) when the input can no longer be read as it was indexed."""
    fields = LlmFields.of(job.spec)
    chunk = chunk_at(job.total_items, job.spec.chunk_size, chunk_index)
    index_at = index_uri(get_settings().llm_output_uri, job.job_id)
    try:
        found = chunk_lines(
            fields.input, fields.prompt_template, index_at, chunk_index, chunk.start, chunk.size
        )
    except InputError:
        return [(Item(index, "", ""), None) for index in range(chunk.start, chunk.end)]
    return list(found)


def _line(item_id: str, text: str | None, error: str, attempts: int) -> str:
    data = {"id": item_id, "input": None if text is None else json.loads(text)}
    return json.dumps({**data, "error": error, "attempts": attempts}, ensure_ascii=False)


def write_chunk_errors(
    job: JobRecord, chunk_index: int, results: list[ItemResult], failed: ChunkRecord | None = None
) -> None:
    """Write the chunk's failed items to its own file, in input order (an empty file when none
    failed: a chunk run again never leaves an old list behind); `failed`, the chunk's record
    when it failed as a whole, adds its unanswered items with its error."""
    by_index = {result.index: result for result in results}
    lines: list[str] = []
    if failed is not None or any(result.error is not None for result in results):
        for item, text in _input_lines(job, chunk_index):
            result = by_index.get(item.index)
            if result is not None and result.error is not None:
                lines.append(_line(result.id, text, result.error, result.attempts))
            elif result is None and failed is not None:
                error = failed.error or "its chunk failed"
                item_id = item.id if text is not None else str(item.index)
                lines.append(_line(item_id, text, error, failed.attempts))
    blobs.write_lines(chunk_errors_uri(job.job_id, chunk_index), lines)


def _failed_chunks(store: JobStore, job: JobRecord) -> None:
    """Write again the files of the chunks that failed as a whole, with their unanswered
    items. Every chunk's record is read, a page at a time, not the `failed` state's index:
    DynamoDB's is eventually consistent, and a finished job's list must be whole."""
    after = -1
    while True:
        page = store.chunk_page(job.job_id, None, after, CHUNKS_PAGE)
        for record in page:
            if record.state == "failed":
                results = store.item_results(job.job_id, record.index)
                write_chunk_errors(job, record.index, results, record)
        if len(page) < CHUNKS_PAGE:
            return
        after = page[-1].index


def merge_errors(store: JobStore, job: JobRecord) -> str | None:
    """The job's file of failed items, merged from its chunks' in input order; None when no
    item failed."""
    tally = job.tally
    if not tally.items_failed and not tally.chunks_failed:
        return None
    if tally.chunks_failed:
        _failed_chunks(store, job)
    uri = merged_errors_uri(job.job_id)
    merge_files((chunk_errors_uri(job.job_id, index) for index in range(job.total_chunks)), uri)
    return uri if blobs.size_of(uri) else None
