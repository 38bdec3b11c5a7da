"""The llm workload's files, wherever they live: a local path or an `s3://bucket/key` URI.

Reads stream line by line (a chunk stops reading after its own lines) and can be bounded: a file
over `max_bytes` is refused from its size before a byte is read, a line over `max_line_bytes`
having read at most that much of it. A local read given a `root` opens only a regular file under
it, checked on the descriptor actually opened, so a symlink swapped in after any earlier check
cannot lead outside. Writes stream and replace the whole file at once (a temporary file renamed
into place locally, one upload on S3), so a reader never sees half a file.

A missing file raises FileNotFoundError; a refused one PermissionError; a location this layer
will not read RefusedLocationError (OutsideRootError: outside `root`); a bound, FileTooLargeError
or LineTooLongError; S3 not answering (no or refused credentials, no connection, a timeout,
throttling, a 5xx) StoreUnavailableError.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

S3_SCHEME = "s3://"
READ_BLOCK_BYTES = 64 * 2**10
FILE_KINDS = {
    stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
}  # fmt: skip
# S3 answers these when it is overloaded or failing, not because of the request.
S3_UNAVAILABLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout",
     "ServiceUnavailable", "InternalError"}
)  # fmt: skip
# ... and these when this service's own credentials are wrong: not the caller's fault either.
S3_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


class RefusedLocationError(ValueError):
    """A location this layer will not read; the message says why."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"{uri}: {reason}")


class OutsideRootError(RefusedLocationError):
    """A local file that is not under the root the read was given."""


class FileTooLargeError(ValueError):
    def __init__(self, uri: str, size: int, limit: int) -> None:
        super().__init__(f"{uri}: {size} bytes, over the limit of {limit}")
        self.size, self.limit = size, limit


class LineTooLongError(ValueError):
    def __init__(self, uri: str, number: int, limit: int) -> None:
        super().__init__(f"{uri}: line {number} is longer than {limit} bytes")
        self.number, self.limit = number, limit


class StoreUnavailableError(OSError):
    """S3 did not answer; `cause` says why, and never holds a credential."""

    def __init__(self, uri: str, cause: str) -> None:
        super().__init__(f"{uri}: {cause}")
        self.cause = cause


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
    from botocore.config import Config

    # Seconds and one retry, not botocore's default minute: a submission waiting on an S3 that
    # cannot be reached answers "unavailable" quickly; a chunk is retried by the platform.
    config = Config(
        connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 2, "mode": "standard"}
    )
    return boto3.client("s3", config=config)


def _s3_error(uri: str, err: Exception) -> Exception:
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        CredentialRetrievalError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            return FileNotFoundError(f"{uri}: no such object ({code})")
        if code in ("AccessDenied", "403"):
            return PermissionError(f"{uri}: access denied")
        if code in S3_CREDENTIAL_CODES:
            return StoreUnavailableError(uri, f"S3 refused this service's credentials ({code})")
        if code in S3_UNAVAILABLE_CODES or status >= 500:
            return StoreUnavailableError(uri, f"S3 is unavailable or throttling ({code or status})")
        return OSError(f"{uri}: {err}")
    if isinstance(err, ParamValidationError):  # e.g. a bucket name S3 would never accept
        return RefusedLocationError(uri, "not a valid S3 bucket and key")
    # Fixed wording: a credential provider's own message may quote its configuration.
    if isinstance(err, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        cause = "this service has no usable AWS credentials"
    elif isinstance(err, (ConnectTimeoutError, ReadTimeoutError)):
        cause = "S3 did not answer in time"
    else:
        cause = "S3 could not be reached"
    return StoreUnavailableError(uri, f"{cause} ({type(err).__name__})")


def _under(path: str, root: str) -> bool:
    return Path(path).is_relative_to(root)


def _open_error(uri: str, err: OSError) -> Exception:
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return FileNotFoundError(f"{uri}: no such file")
    if err.errno in (errno.EACCES, errno.EPERM):
        return PermissionError(f"{uri}: permission denied")
    reasons = {
        errno.ELOOP: "a symlink loop, or a symlink swapped in while it was opened",
        errno.ENAMETOOLONG: "the path, or a name in it (255 bytes at most), is too long",
        errno.ENXIO: "a socket or a device, not a regular file",
        errno.EISDIR: "a directory, not a regular file",
    }
    if err.errno in reasons:
        return RefusedLocationError(uri, reasons[err.errno])
    return err


def _opened_under(fd: int, path: str, opened: os.stat_result, root: str) -> bool:
    """Whether the file behind `fd` is under `root`: closes the race between check and open."""
    try:
        return _under(os.readlink(f"/proc/self/fd/{fd}"), root)  # the kernel's name for it
    except OSError:  # no /proc (macOS): the name checked must still resolve to this very file
        try:
            now, unchanged = os.stat(path), os.path.realpath(path) == path
        except OSError:
            return False
        return unchanged and (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def _open_local(uri: str, root: Path | None) -> tuple[IO[bytes], int]:
    """The regular file `uri` names (under `root`, if given), opened, and its size."""
    try:
        path = os.path.realpath(uri)
    except ValueError as err:  # a NUL byte: no file can have that name
        raise RefusedLocationError(uri, f"not a usable path ({err})") from err
    real_root = None if root is None else os.path.realpath(root)
    if real_root is not None and not _under(path, real_root):
        raise OutsideRootError(uri, f"not under {real_root}")
    try:
        # Every name in `path` was resolved just now, so a symlink last is one swapped in since
        # (O_NOFOLLOW); O_NONBLOCK because opening a FIFO would wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise _open_error(uri, err) from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = FILE_KINDS.get(stat.S_IFMT(info.st_mode), "something else")
            raise RefusedLocationError(uri, f"{kind}, not a regular file")
        if real_root is not None and not _opened_under(fd, path, info, real_root):
            raise OutsideRootError(uri, f"not under {real_root} (it changed as it was opened)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0), info.st_size
    except BaseException:
        os.close(fd)
        raise


def _check_size(uri: str, size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise FileTooLargeError(uri, size, limit)


def _split_lines(
    uri: str, blocks: Iterable[bytes], max_bytes: int | None, max_line: int | None
) -> Iterator[str]:
    """The lines in a stream of blocks; holds at most one line (up to `max_line`) and a block."""
    pending = bytearray()
    number = total = 0
    for block in blocks:
        total += len(block)
        _check_size(uri, total, max_bytes)  # it may have grown since its size was taken
        start, searched = 0, len(pending)  # what was pending holds no newline
        pending += block
        while (end := pending.find(b"\n", max(start, searched))) != -1:
            number += 1
            if max_line is not None and end - start > max_line:
                raise LineTooLongError(uri, number, max_line)
            yield pending[start:end].decode("utf-8").rstrip("\r")
            start = end + 1
        del pending[:start]
        if max_line is not None and len(pending) > max_line:
            raise LineTooLongError(uri, number + 1, max_line)
    if pending:
        yield pending.decode("utf-8").rstrip("\r")


def _blocks(f: IO[bytes]) -> Iterator[bytes]:
    while block := f.read(READ_BLOCK_BYTES):
        yield block


def read_lines(
    uri: str,
    *,
    root: Path | None = None,
    max_bytes: int | None = None,
    max_line_bytes: int | None = None,
) -> Iterator[str]:
    """The file's lines, without line endings, as they are read.

    `root`: a local file must be under it (S3 has none). `max_bytes`: a larger file is refused
    before it is read. `max_line_bytes`: a longer line is refused after at most that much of it.
    """
    if is_s3(uri):
        yield from _read_s3_lines(uri, max_bytes, max_line_bytes)
        return
    f, size = _open_local(uri, root)
    with f:
        _check_size(uri, size, max_bytes)
        yield from _split_lines(uri, _blocks(f), max_bytes, max_line_bytes)


def _read_s3_lines(uri: str, max_bytes: int | None, max_line: int | None) -> Iterator[str]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    try:
        response = s3_client().get_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as err:
        raise _s3_error(uri, err) from err
    body = response["Body"]
    with body:  # not `as body`: StreamingBody's __enter__ gives its raw stream
        # The size of the very object being read (a head_object first could see another one);
        # nothing of the body is read when it is refused.
        _check_size(uri, response["ContentLength"], max_bytes)
        try:
            yield from _split_lines(uri, body.iter_chunks(READ_BLOCK_BYTES), max_bytes, max_line)
        except BotoCoreError as err:  # the connection failed in the middle of the body
            raise _s3_error(uri, err) from err


def write_lines(uri: str, lines: Iterable[str]) -> None:
    """Replace the file with these lines (each gets a newline), streamed, never held whole."""
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        # Spooled: small outputs stay in memory; big ones go to disk and upload in parts.
        with tempfile.SpooledTemporaryFile(max_size=8 * 2**20) as spool:
            for line in lines:
                spool.write(f"{line}\n".encode())
            spool.seek(0)
            try:
                s3_client().upload_fileobj(spool, bucket, key)
            except (BotoCoreError, ClientError) as err:
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
