"""The llm workload's files, wherever they live: a local path or an `s3://bucket/key` URI.

Reads stream line by line (a chunk stops reading after its own lines); writes stream and replace
the whole file at once (a temporary file renamed into place locally, one upload on S3), so a
reader never sees half a file. A missing file raises FileNotFoundError; a refused one,
PermissionError.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

S3_SCHEME = "s3://"


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def join(root: str, *parts: str) -> str:
    """`root/part/...` for both kinds of location."""
    if is_s3(root):
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root, *parts))


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    return bucket, key


@lru_cache
def s3_client() -> Any:
    import boto3  # only the cloud path (and local jobs reading s3://) need it

    return boto3.client("s3")


def _s3_error(uri: str, err: Exception) -> OSError:
    code = getattr(err, "response", {}).get("Error", {}).get("Code", "")
    if code in ("NoSuchKey", "NoSuchBucket", "404"):
        return FileNotFoundError(f"{uri}: no such object ({code})")
    if code in ("AccessDenied", "403"):
        return PermissionError(f"{uri}: access denied")
    return OSError(f"{uri}: {err}")


def read_lines(uri: str) -> Iterator[str]:
    """The file's lines, without line endings, as they are read."""
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as err:
            raise _s3_error(uri, err) from err
        with body:
            for line in body.iter_lines():
                yield line.decode("utf-8")
        return
    path = Path(uri)
    if not path.is_file():
        raise FileNotFoundError(f"{uri}: no such file")
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield line.rstrip("\r\n")


def write_lines(uri: str, lines: Iterable[str]) -> None:
    """Replace the file with these lines (each gets a newline), streamed, never held whole."""
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        # Spooled: small outputs stay in memory; big ones go to disk and upload in parts.
        with tempfile.SpooledTemporaryFile(max_size=8 * 2**20) as spool:
            for line in lines:
                spool.write(f"{line}\n".encode())
            spool.seek(0)
            try:
                s3_client().upload_fileobj(spool, bucket, key)
            except ClientError as err:
                raise _s3_error(uri, err) from err
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(f"{line}\n" for line in lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
