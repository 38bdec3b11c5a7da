"""The llm workload's files, wherever they live: a local path or an `s3://bucket/key` URI.

Reads stream line by line and can be bounded: a file over `max_bytes` is refused from its size
before a byte is read, a line over `max_line_bytes` having read at most that much of it. A read
may cover only a byte range (a seek locally, one ranged GET on S3), so a chunk reads its own
lines and nothing before them; each line comes with its number and byte offsets
(`read_line_spans`), which is what an index of the file records. A local read given a `root`
opens only a regular file under it, checked on the descriptor actually opened, so a symlink
swapped in after any earlier check cannot lead outside. Writes replace the whole file at once (a
temporary file renamed into place locally, one upload on S3), so a reader never sees half a
file.

A missing file raises FileNotFoundError; a refused one PermissionError; a location this layer
will not read RefusedLocationError (OutsideRootError: outside `root`); a bound, FileTooLargeError
or LineTooLongError; a line that is not UTF-8, NotTextError; S3 not answering (no or refused
credentials, no connection, a timeout, throttling, a 5xx) StoreUnavailableError.
"""

from __future__ import annotations

import base64
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, NamedTuple

S3_SCHEME = "s3://"
READ_BLOCK_BYTES = 64 * 2**10
FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
}
# S3 answers these when it is overloaded or failing, not because of the request.
S3_UNAVAILABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
    }
)
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


class NotTextError(ValueError):
    def __init__(self, uri: str, number: int, reason: str) -> None:
        super().__init__(f"{uri}: line {number} is not UTF-8 text ({reason})")
        self.number, self.reason = number, reason


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
    # SigV4 for presigned URLs too (botocore presigns SigV2 by default): S3 then checks the
    # headers a URL was signed with, such as an upload's x-amz-checksum-sha256.
    config = Config(
        connect_timeout=3,
        read_timeout=5,
        retries={"total_max_attempts": 2, "mode": "standard"},
        signature_version="s3v4",
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
    if real_root is not None and any(
        part.startswith(".") for part in Path(path).relative_to(real_root).parts
    ):  # the file as resolved: a symlink or a "../" cannot reach a dotfile either
        raise OutsideRootError(uri, "a dotfile, or in a dot-folder")
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


class Line(NamedTuple):
    number: int  # in the file, from 1
    start: int  # byte offset where it starts
    end: int  # byte offset just past its newline (or the end of the file)
    text: str  # without its line ending


def _text(uri: str, number: int, raw: bytearray) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as err:
        raise NotTextError(uri, number, err.reason) from err


def _split_lines(
    uri: str,
    blocks: Iterable[bytes],
    max_bytes: int | None,
    max_line: int | None,
    *,
    offset: int = 0,
    number: int = 0,
) -> Iterator[Line]:
    """The lines in a stream of blocks that starts at byte `offset` of the file, after line
    `number`; holds at most one line (up to `max_line`) and a block."""
    pending = bytearray()
    base = total = offset  # base: where pending[0] is in the file
    for block in blocks:
        total += len(block)
        _check_size(uri, total, max_bytes)  # it may have grown since its size was taken
        start, searched = 0, len(pending)  # what was pending holds no newline
        pending += block
        while (end := pending.find(b"\n", max(start, searched))) != -1:
            number += 1
            if max_line is not None and end - start > max_line:
                raise LineTooLongError(uri, number, max_line)
            yield Line(number, base + start, base + end + 1, _text(uri, number, pending[start:end]))
            start = end + 1
        del pending[:start]
        base += start
        if max_line is not None and len(pending) > max_line:
            raise LineTooLongError(uri, number + 1, max_line)
    if pending:
        yield Line(number + 1, base, base + len(pending), _text(uri, number + 1, pending))


def _blocks(f: IO[bytes], limit: int | None = None) -> Iterator[bytes]:
    """The file's blocks from where it stands, `limit` bytes at most."""
    while limit is None or limit > 0:
        block = f.read(READ_BLOCK_BYTES if limit is None else min(READ_BLOCK_BYTES, limit))
        if not block:
            return
        if limit is not None:
            limit -= len(block)
        yield block


def read_line_spans(
    uri: str,
    start: int = 0,
    end: int | None = None,
    *,
    root: Path | None = None,
    max_bytes: int | None = None,
    max_line_bytes: int | None = None,
    first_number: int = 1,
) -> Iterator[Line]:
    """Each line of bytes `start` to `end` (exclusive; None: the end of the file), with its
    number (`first_number` for the line at `start`) and its byte offsets in the file.

    Only that range is read (a seek, or one ranged GET); a range past the end of the file holds
    no line. `max_bytes` bounds the whole file's size, checked before anything is read.
    """
    if end is not None and end <= start:
        return  # S3 cannot even ask for an empty range (it would answer the whole object)
    number = first_number - 1
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError

        opened = _s3_get(uri, start, end)
        if opened is None:
            return
        body, size = opened
        with body:  # not `as body`: StreamingBody's __enter__ gives its raw stream
            # The size of the very object being read (a head_object first could see another
            # one); nothing of the body is read when it is refused.
            _check_size(uri, size, max_bytes)
            try:
                blocks = body.iter_chunks(READ_BLOCK_BYTES)
                yield from _split_lines(
                    uri, blocks, max_bytes, max_line_bytes, offset=start, number=number
                )
            except BotoCoreError as err:  # the connection failed in the middle of the body
                raise _s3_error(uri, err) from err
        return
    f, size = _open_local(uri, root)
    with f:
        _check_size(uri, size, max_bytes)
        f.seek(start)
        blocks = _blocks(f, None if end is None else end - start)
        yield from _split_lines(uri, blocks, max_bytes, max_line_bytes, offset=start, number=number)


def _s3_get(uri: str, start: int, end: int | None) -> tuple[Any, int] | None:
    """The object's body from `start` to `end` (exclusive) and the whole object's size; None
    when the object ends before `start`."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    ranged = {} if start == 0 and end is None else {"Range": _s3_range(start, end)}
    try:
        response = s3_client().get_object(Bucket=bucket, Key=key, **ranged)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "InvalidRange":
            return None  # as a local read past the end: nothing there
        raise _s3_error(uri, err) from err
    except BotoCoreError as err:
        raise _s3_error(uri, err) from err
    if not ranged:
        return response["Body"], int(response["ContentLength"])
    # "bytes 100-199/12345": the range's length is ContentLength, the object's comes last.
    return response["Body"], int(str(response["ContentRange"]).rpartition("/")[2])


def _s3_range(start: int, end: int | None) -> str:
    return f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"


def read_range(uri: str, start: int, end: int, *, root: Path | None = None) -> bytes:
    """Bytes `start` to `end` (exclusive) of the file; fewer where the file ends before `end`."""
    if end <= start:
        return b""
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError

        opened = _s3_get(uri, start, end)
        if opened is None:
            return b""
        body, _ = opened
        with body:
            try:
                return bytes(body.read())
            except BotoCoreError as err:
                raise _s3_error(uri, err) from err
    f, _ = _open_local(uri, root)
    with f:
        f.seek(start)
        return b"".join(_blocks(f, end - start))


def size_of(uri: str, *, root: Path | None = None) -> int:
    """The file's size in bytes; a local file passes every check a read makes, and is measured
    on the descriptor opened (the file that would be read)."""
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
        except (BotoCoreError, ClientError) as err:
            raise _s3_error(uri, err) from err
    f, size = _open_local(uri, root)
    f.close()
    return size


def read_blocks(uri: str, *, root: Path | None = None) -> Iterator[bytes]:
    """The whole file, a block at a time (never held whole). Opened before this returns, so a
    missing or refused file raises here, not at the first block."""
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError

        opened = _s3_get(uri, 0, None)
        if opened is None:  # only a ranged read can start past the end
            raise FileNotFoundError(f"{uri}: no such object")
        body, _ = opened

        def s3_blocks() -> Iterator[bytes]:
            with body:
                try:
                    yield from body.iter_chunks(READ_BLOCK_BYTES)
                except BotoCoreError as err:
                    raise _s3_error(uri, err) from err

        return s3_blocks()
    f, _ = _open_local(uri, root)

    def local_blocks() -> Iterator[bytes]:
        with f:
            yield from _blocks(f)

    return local_blocks()


def presigned_get(uri: str, expires_s: int) -> str:
    """A URL that GETs the S3 object `uri` without credentials for `expires_s` seconds (or
    until the credentials that signed it expire, if sooner)."""
    bucket, key = split_s3(uri)
    url: str = s3_client().generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s
    )
    return url


def presigned_put(uri: str, sha256_hex: str, expires_s: int) -> tuple[str, dict[str, str]]:
    """A URL that PUTs the S3 object `uri`, and the headers the PUT must send: the content's
    SHA-256 is signed into it, so S3 refuses a body with any other (BadDigest)."""
    bucket, key = split_s3(uri)
    checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    params = {"Bucket": bucket, "Key": key, "ChecksumSHA256": checksum}
    url: str = s3_client().generate_presigned_url("put_object", Params=params, ExpiresIn=expires_s)
    return url, {"x-amz-checksum-sha256": checksum}


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
    _replace_local(uri, lambda f: f.writelines(f"{line}\n".encode() for line in lines))


def write_bytes(uri: str, data: bytes) -> None:
    """Replace the file with `data`, at once."""
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as err:
            raise _s3_error(uri, err) from err
        return
    _replace_local(uri, lambda f: f.write(data))


def _replace_local(uri: str, write: Callable[[IO[bytes]], object]) -> None:
    """Write a temporary file beside `uri`, then rename it into place: never half a file."""
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
