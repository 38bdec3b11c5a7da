"""The llm workload's outputs: one JSONL file per chunk, merged into one in input order.

Layout under LLM_OUTPUT_URI (a local folder or an s3:// prefix):
    <job_id>/chunk-000000.jsonl ...   written from the job store as each chunk settles
    <job_id>/output.jsonl             every chunk's lines, in input order, once the job ends
    <job_id>/items/000000042.txt      an item's output too big for a job-store row (UTF-8 text)

A line is `{"id", "output", "usage": {"prompt_tokens", "completion_tokens"}, "latency_ms"}`,
plus `"error"` (and a null output) for an item the model could not answer, or `"parsed"` (the
answer as JSON) for a job with a response_format. Items never reached
(a chunk that gave up) have no line; the status JSON lists those chunks.
An output over INLINE_OUTPUT_MAX_BYTES is kept in its own file (`keep_output`), the store's row
holding its URI: a DynamoDB item is 400 KB at most. A line is the same whichever way it was kept.
Every write is a whole-file replacement of content derived from the store (or, for an item's
file, of the model's answer), so doing one twice (a redelivered message, a retried step) gives
the same file. The merge streams in constant memory (see `merge`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from chunking.settings import get_settings
from chunking.status import ItemResult
from chunking.store import JobStore
from workloads.llm import blobs
from workloads.llm.merge import merge_files

MERGED_NAME = "output.jsonl"
ITEMS_FOLDER = "items"
# Well under DynamoDB's 400 KB an item, which also holds the id, error, tokens and keys.
INLINE_OUTPUT_MAX_BYTES = 64 * 1024


def chunk_output_uri(job_id: str, chunk_index: int) -> str:
    return blobs.join(get_settings().llm_output_uri, job_id, f"chunk-{chunk_index:06d}.jsonl")


def merged_output_uri(job_id: str) -> str:
    return blobs.join(get_settings().llm_output_uri, job_id, MERGED_NAME)


def item_output_uri(job_id: str, item_index: int) -> str:
    return blobs.join(get_settings().llm_output_uri, job_id, ITEMS_FOLDER, f"{item_index:09d}.txt")


def keep_output(job_id: str, item_index: int, output: str) -> tuple[str | None, str | None]:
    """`(output, None)` for a row to hold, or `(None, uri)` once a big output is in its file."""
    data = output.encode()
    if len(data) <= INLINE_OUTPUT_MAX_BYTES:
        return output, None
    uri = item_output_uri(job_id, item_index)
    _write_bytes(uri, data)
    return None, uri


def _write_bytes(uri: str, data: bytes) -> None:
    """Replace the file whole: a reader (or a second write of the same item) never sees half."""
    if blobs.is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = blobs.split_s3(uri)
        try:
            blobs.s3_client().put_object(
                Bucket=bucket, Key=key, Body=data, ContentType="text/plain; charset=utf-8"
            )
        except (BotoCoreError, ClientError) as err:
            raise blobs._s3_error(uri, err) from err
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_text(uri: str) -> str:
    if blobs.is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = blobs.split_s3(uri)
        try:
            body = blobs.s3_client().get_object(Bucket=bucket, Key=key)["Body"]
            with body:
                data: bytes = body.read()
        except (BotoCoreError, ClientError) as err:
            raise blobs._s3_error(uri, err) from err
        return data.decode()
    return Path(uri).read_bytes().decode()


def output_line(result: ItemResult, structured: bool = False) -> str:
    """The item's line of output; `structured` (the job has a response_format): with its
    answer parsed, which was validated against the schema before it was kept."""
    output = result.output if result.output_uri is None else _read_text(result.output_uri)
    line: dict[str, object] = {
        "id": result.id,
        "output": output,
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
        },
        "latency_ms": result.latency_ms,
    }
    if result.error is not None:
        line["error"] = result.error
    elif structured and output is not None:
        line["parsed"] = json.loads(output)
    return json.dumps(line, ensure_ascii=False)


def write_chunk_output(
    store: JobStore, job_id: str, chunk_index: int, structured: bool = False
) -> list[ItemResult]:
    """Write the chunk's kept results (in item order) to its own file; returns them (its
    settlement adds up their usage without reading them again)."""
    results = store.item_results(job_id, chunk_index)
    lines = (output_line(r, structured) for r in results)
    blobs.write_lines(chunk_output_uri(job_id, chunk_index), lines)
    return results


def merge_outputs(job_id: str, total_chunks: int) -> str:
    """Concatenate the chunk files in chunk order into the job's output; returns its URI.

    Streamed, in constant memory; the output appears whole or not at all, and a rerun (of a
    merge that failed or was killed mid-way) writes it again whole. A missing chunk file (a
    chunk that never settled with results; the status names it) is skipped.
    """
    uri = merged_output_uri(job_id)
    merge_files((chunk_output_uri(job_id, index) for index in range(total_chunks)), uri)
    return uri
