"""The llm workload's merged output and big item outputs, on a local folder and on S3 (moto).

- The merge is the chunk files' concatenation in index order, missing chunks skipped.
- On S3, every part but the last is at least 5 MiB; a big chunk file is copied by S3 itself.
- A merge that fails mid-way leaves no output (or the previous one); run again, exactly one.
- An item output too big for a store's row is kept in a file; its line is the same either way.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import ItemResult
from stores.sqlite import SqliteJobStore
from workloads.llm import blobs, merge
from workloads.llm.outputs import (
    INLINE_OUTPUT_MAX_BYTES,
    chunk_output_uri,
    item_output_uri,
    keep_output,
    merge_outputs,
    merged_output_uri,
    output_line,
    write_chunk_output,
)

MiB = 2**20
BUCKET = "data"
JOB = "job-1"


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """LLM_OUTPUT_URI as a local folder (set by tests/conftest.py) or an S3 prefix on moto."""
    if request.param == "local":
        yield "local"
        return
    request.getfixturevalue("aws_env")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        monkeypatch.setenv("LLM_OUTPUT_URI", f"s3://{BUCKET}/outputs")
        get_settings.cache_clear()
        blobs.s3_client.cache_clear()
        yield "s3"
        blobs.s3_client.cache_clear()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, aws_env: None) -> Iterator[Any]:
    """LLM_OUTPUT_URI on S3 (moto); the client the merge uses."""
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        monkeypatch.setenv("LLM_OUTPUT_URI", f"s3://{BUCKET}/outputs")
        get_settings.cache_clear()
        blobs.s3_client.cache_clear()
        yield blobs.s3_client()
        blobs.s3_client.cache_clear()


def put(uri: str, data: bytes) -> None:
    if blobs.is_s3(uri):
        bucket, key = blobs.split_s3(uri)
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_bytes(data)


def get(uri: str) -> bytes:
    if blobs.is_s3(uri):
        bucket, key = blobs.split_s3(uri)
        body: bytes = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        return body
    return Path(uri).read_bytes()


def exists(uri: str) -> bool:
    if not blobs.is_s3(uri):
        return Path(uri).exists()
    bucket, key = blobs.split_s3(uri)
    try:
        boto3.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


def chunk_bytes(index: int, size: int) -> bytes:
    """Exactly `size` bytes of lines of about 200 bytes, different for each chunk."""
    line = f'{{"id": "{index}", "output": "{"x" * 170}"}}\n'.encode()
    data = (line * (size // len(line) + 1))[:size]
    return data[:-1] + b"\n" if data else data


def write_chunks(sizes: Sequence[int | None]) -> bytes:
    """One chunk file per size (None: no file), and the merge they should give."""
    expected = bytearray()
    for index, size in enumerate(sizes):
        if size is not None:
            data = chunk_bytes(index, size)
            put(chunk_output_uri(JOB, index), data)
            expected += data
    return bytes(expected)


def in_progress_uploads() -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = (
        boto3.client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    )
    return uploads


SPIED = ("upload_part", "upload_part_copy", "get_object", "head_object", "put_object",
         "complete_multipart_upload", "abort_multipart_upload")  # fmt: skip


class Spy:
    """The merge's S3 calls, recorded; a call may be made to fail (the n-th of an operation)."""

    def __init__(self, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, int] = {}
        for name in SPIED:
            monkeypatch.setattr(client, name, self._wrap(name, getattr(client, name)))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(**params: Any) -> Any:
            recorded = dict(params)
            if name == "upload_part":
                body: IO[bytes] = params["Body"]
                start = body.tell()
                recorded["size"] = body.seek(0, 2) - start
                body.seek(start)
            self.calls.append((name, recorded))
            if self.fail.get(name) == sum(1 for n, _ in self.calls if n == name):
                raise RuntimeError(f"injected failure of {name}")
            return real(**params)

        return call

    def of(self, name: str) -> list[dict[str, Any]]:
        return [params for n, params in self.calls if n == name]


# --- the merge: the chunk files in order, missing ones skipped ----------------------------------


def test_merge_concatenates_the_chunk_files_in_order_skipping_missing_ones(where: str) -> None:
    expected = write_chunks([300, None, 10_000, 0, 2_000, None])
    uri = merge_outputs(JOB, 6)
    assert uri == merged_output_uri(JOB)
    assert get(uri) == expected
    assert merge_outputs(JOB, 6) == uri and get(uri) == expected  # a second merge: the same


def test_merge_of_no_chunk_file_is_an_empty_output(where: str) -> None:
    assert get(merge_outputs(JOB, 3)) == b""


def test_merge_gives_the_lines_of_the_chunk_outputs_written_from_the_store(
    where: str, tmp_path: Path
) -> None:
    store = SqliteJobStore(tmp_path / "s.db")
    store.create_job(JOB, JobSpec(workload="simulate", total_items=10, chunk_size=5), "local")
    for i in (0, 1, 2, 5, 6):  # chunk 0: items 0-4; chunk 1: items 5-9
        store.record_item(JOB, ItemResult(index=i, chunk_index=i // 5, id=f"i{i}", output=f"o{i}"))
    write_chunk_output(store, JOB, 0)
    write_chunk_output(store, JOB, 1)
    lines = get(merge_outputs(JOB, 2)).decode().splitlines()
    assert [line.split('"')[3] for line in lines] == ["i0", "i1", "i2", "i5", "i6"]


# --- S3: the parts --------------------------------------------------------------------------------


def test_s3_parts_are_big_enough_and_big_chunk_files_are_copied_not_downloaded(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(s3, monkeypatch)
    sizes: list[int | None] = [
        100_000,  # buffered
        6 * MiB,  # big, but the buffer holds 100 KB: streamed into it (6.1 MiB, not sent yet)
        6 * MiB,  # big, the buffer is a part already: it is sent (part 1), this one copied (2)
        6 * MiB,  # big, the buffer empty: copied (part 3)
        None,
        200_000,
        3 * MiB,  # small: buffered (3.2 MiB)
        6 * MiB,  # big, the buffer too small to be a part: streamed; at 8 MiB part 4 is sent
        10_000,  # the rest is the last part (5)
    ]
    expected = write_chunks(sizes)
    merge_outputs(JOB, len(sizes))
    assert get(merged_output_uri(JOB)) == expected  # byte for byte

    copied = [p["CopySource"]["Key"] for p in spy.of("upload_part_copy")]
    assert copied == [blobs.split_s3(chunk_output_uri(JOB, i))[1] for i in (2, 3)]
    downloaded = {p["Key"] for p in spy.of("get_object")}
    assert not downloaded & set(copied)  # no byte of a copied file came through here
    part_sizes: dict[int, int] = {p["PartNumber"]: p["size"] for p in spy.of("upload_part")}
    part_sizes |= {p["PartNumber"]: 6 * MiB for p in spy.of("upload_part_copy")}
    assert sorted(part_sizes) == [1, 2, 3, 4, 5]
    assert part_sizes[1] == 100_000 + 6 * MiB
    assert 8 * MiB <= part_sizes[4] <= 8 * MiB + merge.COPY_BLOCK_BYTES
    assert all(part_sizes[n] >= merge.MIN_PART_BYTES for n in (1, 2, 3, 4))
    assert sum(part_sizes.values()) == len(expected)
    (completed,) = spy.of("complete_multipart_upload")
    assert [p["PartNumber"] for p in completed["MultipartUpload"]["Parts"]] == [1, 2, 3, 4, 5]
    assert in_progress_uploads() == []


def test_s3_a_small_output_is_one_put_and_no_upload(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(s3, monkeypatch)
    expected = write_chunks([1_000, 2_000])
    merge_outputs(JOB, 2)
    assert get(merged_output_uri(JOB)) == expected
    assert [name for name, _ in spy.calls if name not in ("head_object", "get_object")] == [
        "put_object"
    ]


# --- a merge that fails mid-way, run again ------------------------------------------------------


def test_s3_a_merge_failing_mid_way_leaves_no_output_and_a_rerun_writes_one(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(s3, monkeypatch)
    expected = write_chunks([3 * MiB] * 6 + [None, 1_000])  # 18 MiB streamed: 3 parts
    spy.fail["upload_part"] = 2
    with pytest.raises(RuntimeError, match="injected failure of upload_part"):
        merge_outputs(JOB, 8)
    assert not exists(merged_output_uri(JOB))
    assert len(spy.of("abort_multipart_upload")) == 1
    assert in_progress_uploads() == []

    spy.fail.clear()
    assert get(merge_outputs(JOB, 8)) == expected
    assert in_progress_uploads() == []


def test_s3_a_merge_killed_mid_way_is_not_confused_by_its_upload_left_behind(s3: Any) -> None:
    expected = write_chunks([3 * MiB] * 4)
    bucket, key = blobs.split_s3(merged_output_uri(JOB))
    # What a killed merge leaves: an upload of the same key, with a part of other content.
    stale = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=stale, PartNumber=1, Body=b"z" * 6 * MiB)
    assert not exists(merged_output_uri(JOB))

    assert get(merge_outputs(JOB, 4)) == expected
    # Left for the bucket's AbortIncompleteMultipartUpload rule; never read.
    assert [u["UploadId"] for u in in_progress_uploads()] == [stale]
    assert get(merge_outputs(JOB, 4)) == expected  # and again: the same one object


def test_s3_errors_are_mapped_and_the_upload_aborted(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_chunks([9 * MiB, 1_000])  # copied, so an upload is in progress when completing fails

    def throttled(**params: Any) -> Any:
        error = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
        raise ClientError(error, "CompleteMultipartUpload")

    monkeypatch.setattr(s3, "complete_multipart_upload", throttled)
    with pytest.raises(blobs.StoreUnavailableError, match="unavailable or throttling"):
        merge_outputs(JOB, 2)
    assert in_progress_uploads() == []
    assert not exists(merged_output_uri(JOB))


def test_local_a_merge_failing_mid_way_leaves_the_output_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = write_chunks([5_000, 6_000, None, 7_000])
    real_copy = shutil.copyfileobj
    copies = 0

    def failing_copy(src: Any, dst: Any, length: int = 0) -> None:
        nonlocal copies
        copies += 1
        if copies == 2:
            dst.write(src.read(100))  # half a chunk written, then the failure
            raise OSError("injected failure mid-stream")
        real_copy(src, dst, length)

    monkeypatch.setattr(shutil, "copyfileobj", failing_copy)
    output = Path(merged_output_uri(JOB))
    with pytest.raises(OSError, match="injected"):
        merge_outputs(JOB, 4)
    assert not output.exists()
    output.write_bytes(b"the previous merge\n")
    copies = 0
    with pytest.raises(OSError, match="injected"):
        merge_outputs(JOB, 4)
    assert output.read_bytes() == b"the previous merge\n"  # never half a file
    assert sorted(p.name for p in output.parent.iterdir() if p.name.startswith(".")) == []

    monkeypatch.setattr(shutil, "copyfileobj", real_copy)
    (output.parent / f".{output.name}.killed").write_bytes(b"what a killed merge left")
    assert Path(merge_outputs(JOB, 4)).read_bytes() == expected


# --- item outputs too big for a row -------------------------------------------------------------


def test_a_small_output_is_kept_inline(where: str) -> None:
    fits = "é" * (INLINE_OUTPUT_MAX_BYTES // 2)  # 2 bytes each in UTF-8: exactly the limit
    assert keep_output(JOB, 7, fits) == (fits, None)
    assert not exists(item_output_uri(JOB, 7))


def test_a_big_output_is_kept_in_its_file_and_gives_the_same_line(where: str) -> None:
    big = "é" * (INLINE_OUTPUT_MAX_BYTES // 2) + "\n and one more line"
    output, uri = keep_output(JOB, 42, big)
    assert (output, uri) == (None, item_output_uri(JOB, 42))
    assert uri is not None and uri.endswith(f"/{JOB}/items/000000042.txt")
    assert get(uri) == big.encode()  # the text whole, in UTF-8
    assert keep_output(JOB, 42, big) == (None, uri)  # written twice: the same file
    assert get(uri) == big.encode()

    fields = {"index": 42, "chunk_index": 0, "id": "a", "prompt_tokens": 3, "latency_ms": 5.0}
    inline = ItemResult(**fields, output=big)  # type: ignore[arg-type]
    kept = ItemResult(**fields, output_uri=uri)  # type: ignore[arg-type]
    assert output_line(kept) == output_line(inline)


def test_a_big_output_round_trips_through_the_store_and_the_chunk_file(
    where: str, tmp_path: Path
) -> None:
    store = SqliteJobStore(tmp_path / "s.db")
    store.create_job(JOB, JobSpec(workload="simulate", total_items=10, chunk_size=5), "local")
    answers = {5: "short", 6: "ü" * INLINE_OUTPUT_MAX_BYTES, 7: "x" * (INLINE_OUTPUT_MAX_BYTES + 1)}
    for index, answer in answers.items():
        output, uri = keep_output(JOB, index, answer)
        result = ItemResult(
            index=index, chunk_index=1, id=f"i{index}", output=output, output_uri=uri
        )
        store.record_item(JOB, result)
    assert [r.output_uri is not None for r in store.item_results(JOB, 1)] == [False, True, True]

    write_chunk_output(store, JOB, 1)
    lines = [line.text for line in blobs.read_line_spans(chunk_output_uri(JOB, 1))]
    assert lines == [
        output_line(ItemResult(index=i, chunk_index=1, id=f"i{i}", output=answer))
        for i, answer in answers.items()
    ]
    assert [line.text for line in blobs.read_line_spans(merge_outputs(JOB, 2))] == lines
