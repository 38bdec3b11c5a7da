"""Concatenating files into one, streamed in constant memory, the result appearing whole or not.

`merge_files(sources, target)` writes the bytes of every source that exists, in order, to
`target`; a missing source is skipped. Sources are taken one at a time from an iterable, so a
job of a million chunks never holds a million names.

Local: the sources are copied block by block into a temporary file beside the target, synced,
then renamed over it, so a reader sees the old file or the new one, never half of one.

S3: a multipart upload, so the object appears only when `complete_multipart_upload` succeeds.
A source of at least 5 MiB (S3's least part size) is copied server-side with
`upload_part_copy`, its bytes never passing through here; smaller sources are streamed into a
buffer sent as parts of about 8 MiB. The buffer is a temporary file, not memory: the memory
used is one read block whatever the output's size. The rule that keeps every part but the last
at 5 MiB or more: a big source is copied only when the buffer is empty or itself big enough to
be a part (then it is sent first); otherwise the big source is streamed into the buffer too.
An output that never fills a part (empty included) is one `put_object`, with no upload at all.

A merge that fails aborts its upload and raises (S3 errors mapped as in `blobs`); run again, it
starts a new upload of its own, so it yields exactly one whole object. A process killed mid-way
leaves an in-progress upload that nothing reads; the data bucket's AbortIncompleteMultipartUpload
lifecycle rule removes it (a rerun never looks for it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from workloads.llm import blobs

COPY_BLOCK_BYTES = 2**20  # read and write size when bytes do pass through here
MIN_PART_BYTES = 5 * 2**20  # S3: every part of a multipart upload but the last
PART_BYTES = 8 * 2**20  # the buffer is sent as a part once it holds this much
MAX_COPY_PART_BYTES = 5 * 2**30  # S3: the most one upload_part_copy may copy


def merge_files(sources: Iterable[str], target: str) -> None:
    """Replace `target` with the concatenation of the `sources` that exist, in order."""
    if blobs.is_s3(target):
        _merge_s3(sources, target)
    else:
        _merge_local(sources, target)


# --- local --------------------------------------------------------------------------------------


def _merge_local(sources: Iterable[str], target: str) -> None:
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per run: a merge redelivered while another still runs cannot write into
    # the other's file. A killed run leaves its `.output.jsonl.*` behind, never the output.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for source in sources:
                try:
                    f = open(source, "rb", buffering=0)  # noqa: SIM115 - closed just below
                except FileNotFoundError:
                    continue  # the chunk never settled with results; the status names it
                with f:
                    shutil.copyfileobj(f, out, COPY_BLOCK_BYTES)
            out.flush()
            os.fsync(out.fileno())  # on disk before it is named: a crash leaves no empty output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- S3 -----------------------------------------------------------------------------------------


class _S3Call:
    """Calls to S3 with their errors mapped as `blobs` maps them, naming the object concerned."""

    def __init__(self) -> None:
        self.client: Any = blobs.s3_client()

    def __call__(self, uri: str, operation: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(**params)
        except (BotoCoreError, ClientError) as err:
            raise blobs._s3_error(uri, err) from err


class _MultipartWriter:
    """The parts of one object, the upload created only once a part must be sent."""

    def __init__(self, call: _S3Call, target: str) -> None:
        self.call, self.target = call, target
        self.bucket, self.key = blobs.split_s3(target)
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []  # one small dict a part: 10,000 parts at most

    def _upload(self) -> str:
        if self.upload_id is None:
            created = self.call(
                self.target, "create_multipart_upload", Bucket=self.bucket, Key=self.key
            )
            self.upload_id = str(created["UploadId"])
        return self.upload_id

    def _params(self) -> dict[str, Any]:
        upload_id = self._upload()
        number = len(self.parts) + 1
        return {"Bucket": self.bucket, "Key": self.key, "UploadId": upload_id, "PartNumber": number}

    def send(self, buffer: IO[bytes]) -> None:
        """The buffer's content as the next part; the buffer is emptied."""
        buffer.seek(0)
        params = self._params()
        sent = self.call(self.target, "upload_part", Body=buffer, **params)
        self.parts.append({"PartNumber": params["PartNumber"], "ETag": sent["ETag"]})
        buffer.seek(0)
        buffer.truncate()

    def copy(self, source: str, size: int, etag: str) -> None:
        """The source object as the next part(s), copied by S3 itself."""
        bucket, key = blobs.split_s3(source)
        # Over 5 GiB it takes several copies, of equal ranges so none is under 5 MiB.
        count = -(-size // MAX_COPY_PART_BYTES)
        for i in range(count):
            start, end = size * i // count, size * (i + 1) // count - 1
            params = self._params()
            copied = self.call(
                source,
                "upload_part_copy",
                CopySource={"Bucket": bucket, "Key": key},
                CopySourceRange=f"bytes={start}-{end}",
                CopySourceIfMatch=etag,  # the very object that was sized, or an error
                **params,
            )
            etag_of_part = copied["CopyPartResult"]["ETag"]
            self.parts.append({"PartNumber": params["PartNumber"], "ETag": etag_of_part})

    def finish(self, buffer: IO[bytes], buffered: int) -> None:
        """The object made visible: the last part and the upload completed, or one small put."""
        if self.upload_id is None:
            buffer.seek(0)
            self.call(self.target, "put_object", Bucket=self.bucket, Key=self.key, Body=buffer)
            return
        if buffered:
            self.send(buffer)
        self.call(
            self.target,
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    def abort(self) -> None:
        if self.upload_id is None:
            return
        # Best effort: an upload left behind is removed by the bucket's lifecycle rule, and the
        # error worth raising is the one that made the merge fail.
        with contextlib.suppress(Exception):
            self.call.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )


def _size_and_etag(call: _S3Call, source: str) -> tuple[int, str] | None:
    bucket, key = blobs.split_s3(source)
    try:
        head = call(source, "head_object", Bucket=bucket, Key=key)
    except FileNotFoundError:
        return None
    return int(head["ContentLength"]), str(head["ETag"])


def _stream_into(
    call: _S3Call, source: str, etag: str, buffer: IO[bytes], writer: _MultipartWriter
) -> None:
    """The source's bytes appended to the buffer, which is sent each time it holds a part."""
    from botocore.exceptions import BotoCoreError

    bucket, key = blobs.split_s3(source)
    # IfMatch: the object that was sized, not one written since (that fails, and is retried).
    response = call(source, "get_object", Bucket=bucket, Key=key, IfMatch=etag)
    body = response["Body"]
    with body:  # not `as body`: StreamingBody's __enter__ gives its raw stream
        try:
            for block in body.iter_chunks(COPY_BLOCK_BYTES):
                buffer.write(block)
                if buffer.tell() >= PART_BYTES:
                    writer.send(buffer)
        except BotoCoreError as err:  # the connection failed in the middle of the body
            raise blobs._s3_error(source, err) from err


def _merge_s3(sources: Iterable[str], target: str) -> None:
    call = _S3Call()
    writer = _MultipartWriter(call, target)
    try:
        with tempfile.TemporaryFile() as buffer:
            for source in sources:
                found = _size_and_etag(call, source)
                if found is None:
                    continue  # the chunk never settled with results; the status names it
                size, etag = found
                buffered = buffer.tell()
                if size >= MIN_PART_BYTES and (buffered == 0 or buffered >= MIN_PART_BYTES):
                    if buffered:
                        writer.send(buffer)
                    writer.copy(source, size, etag)
                    continue
                _stream_into(call, source, etag, buffer, writer)
            writer.finish(buffer, buffer.tell())
    except BaseException:
        writer.abort()
        raise
