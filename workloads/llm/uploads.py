"""An llm job's input file sent through the API (POST /inputs, then a PUT of its bytes), named
by its content: the same file again is the same name, so a client that runs twice uploads once.

Where an upload lives is the caller's own folder, `uploads/<tenant>/<sha256>.jsonl` under
LLM_INPUT_ROOT locally and `inputs/<tenant>/<sha256>.jsonl` in the cloud's data bucket (the
folder is `shared` for a shared key or an operator's). Both APIs read the request the same way
(`upload_request`) and answer the same JSON (`answer`); the local API receives the bytes itself
(`LocalUpload`: streamed to a temporary file, hashed and counted as they come, renamed into
place only when they are what was announced), the cloud's client PUTs them to S3.

With tenant keys, that folder is also the only place a tenant's llm job may read its input from
(`check_own_input`, run by both APIs' job submission), so no tenant names another's uploads or
a job's outputs as its input.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chunking.api_errors import (
    BodyError,
    field_errors,
    invalid_field,
    invalid_request,
    parse_json_body,
)
from chunking.prepare import spec_error
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.tenancy import Caller
from workloads.llm import blobs
from workloads.llm.fields import LlmFields

SHA256_PATTERN = "^[0-9a-f]{64}$"
SHARED_FOLDER = "shared"  # a shared key's uploads, and an operator's
UPLOAD_URL_EXPIRES_S = 3600


class InputUpload(BaseModel):
    """POST /inputs: the file about to be sent. Strict: `bytes` is a JSON integer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sha256: str = Field(pattern=SHA256_PATTERN, description="the file's SHA-256, lowercase hex")
    size: int = Field(alias="bytes", ge=1, description="the file's size in bytes")


class RefusedRequest(ValueError):
    """A request either API answers with `status` and the error body `body`."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["message"])
        self.status, self.body = status, body


def refused_field(status: int, field: str, message: str) -> RefusedRequest:
    """The error contract's answer naming one field."""
    return RefusedRequest(status, invalid_field(field, message))


def upload_request(raw: bytes) -> InputUpload:
    """POST /inputs' body, or RefusedRequest: 400 naming the field, 413 naming `bytes` for a
    file over LLM_INPUT_MAX_BYTES (an input that large could never be read)."""
    try:
        upload = InputUpload.model_validate(parse_json_body(raw) or {})
    except BodyError as err:
        raise RefusedRequest(err.status, {"message": str(err)}) from err
    except ValidationError as err:
        raise RefusedRequest(400, invalid_request(field_errors(err))) from err
    limit = get_settings().llm_input_max_bytes
    if upload.size > limit:
        message = f"{upload.size} is over LLM_INPUT_MAX_BYTES ({limit}), the largest input read"
        raise refused_field(413, "bytes", message)
    return upload


def too_large() -> RefusedRequest:
    """413 for an input's bytes over LLM_INPUT_MAX_BYTES, as they arrive."""
    limit = get_settings().llm_input_max_bytes
    message = f"over LLM_INPUT_MAX_BYTES ({limit} bytes), the largest input read"
    return refused_field(413, "(body)", message)


def checked_sha256(value: str) -> str:
    """A SHA-256 named in a path, or RefusedRequest (400 naming `sha256`)."""
    if not re.fullmatch(SHA256_PATTERN, value):
        raise refused_field(400, "sha256", "must be 64 lowercase hex characters")
    return value


def folder_of(caller: Caller) -> str:
    """The caller's folder: its tenant's, or `shared` (a shared key sees every job anyway)."""
    return caller.tenant or SHARED_FOLDER


class Upload(BaseModel):
    """How to send the file: `url` relative (the local API: join it to the API's base URL and
    send the API key) or absolute (the cloud's presigned S3 URL: send no key), with `headers`."""

    method: Literal["PUT"] = "PUT"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)


class InputSlot(BaseModel):
    """POST /inputs' answer: what to pass as the JobSpec's input_uri, and how to send the file
    (`upload` null: it is there already, with the size announced)."""

    input_uri: str
    upload: Upload | None


class InputKept(BaseModel):
    """PUT /inputs/{sha256}'s answer (local API): the file is there."""

    input_uri: str


def local_folder(caller: Caller) -> str:
    """The caller's folder of local uploads (under LLM_INPUT_ROOT), with a trailing slash."""
    return f"{get_settings().llm_input_root / 'uploads' / folder_of(caller)}/"


def s3_folder(bucket: str, caller: Caller) -> str:
    """The caller's folder of uploads in the cloud's data bucket, with a trailing slash."""
    return f"s3://{bucket}/inputs/{folder_of(caller)}/"


def local_input_uri(caller: Caller, sha256: str) -> str:
    """Where a local upload lives, as a JobSpec's input_uri names it (under LLM_INPUT_ROOT)."""
    return f"{local_folder(caller)}{sha256}.jsonl"


def s3_input_uri(bucket: str, caller: Caller, sha256: str) -> str:
    return f"{s3_folder(bucket, caller)}{sha256}.jsonl"


def _in_local_folder(uri: str, folder: str) -> bool:
    """Whether the local path resolves below `folder`, as a read would resolve it (blobs):
    `..`, `//` and symlinks followed first, so none of them leads out of it."""
    if blobs.is_s3(uri):
        return False
    try:
        path, real_folder = Path(os.path.realpath(uri)), Path(os.path.realpath(folder))
    except ValueError:  # a NUL byte: no file has that name
        return False
    return path != real_folder and path.is_relative_to(real_folder)


def _in_s3_folder(uri: str, folder: str) -> bool:
    """Whether the s3:// URI is below `folder` (bucket and key prefix compared exactly, the
    prefix ending in "/", so `acme` is not `acme2`), with no empty, `.` or `..` name after
    it: S3 keeps those literally, but a client or proxy normalising the path would not."""
    rest = uri.removeprefix(folder)
    return rest != uri and all(name not in ("", ".", "..") for name in rest.split("/"))


def check_own_input(spec: JobSpec, caller: Caller, bucket: Callable[[], str] | None = None) -> None:
    """With tenant keys, a tenant's llm job reads its input only from the tenant's own folder,
    the one POST /inputs puts files in: locally under LLM_INPUT_ROOT, in the cloud (`bucket`:
    the data bucket's name, asked only for a tenant's job) in S3. Else a ValidationError naming
    input_uri, worded alike whether or not the file is there. Only where the name points is
    looked at, before anything reads the file (the workload's `prepare` would: its answers
    could tell what is there). An operator's key and a shared key may name any input; items
    given in the request have no input_uri yet (the workload keeps them as one)."""
    fields = spec.own
    if caller.tenant is None or not isinstance(fields, LlmFields) or fields.input_uri is None:
        return
    uri = fields.input_uri
    if bucket is None:
        folder = local_folder(caller)
        mine = _in_local_folder(uri, folder)
    else:
        folder = s3_folder(bucket(), caller)
        mine = _in_s3_folder(uri, folder)
    if not mine:
        message = (
            f"a job of tenant {caller.tenant!r} reads its input only from the tenant's folder "
            f"{folder}: send the file there with POST /inputs and pass the input_uri it "
            "answers (or give the items in the request)"
        )
        raise spec_error("input_uri", message, uri)


def size_if_there(uri: str) -> int | None:
    """The file's size, or None when there is none (S3: head_object)."""
    root = None if blobs.is_s3(uri) else get_settings().llm_input_root
    try:
        return blobs.size_of(uri, root=root)
    except FileNotFoundError:
        return None


class LocalUpload:
    """One PUT of a local input: its bytes written to a temporary dotfile beside the final
    name (never an input: dotfiles are refused), hashed and counted as they come; kept by an
    atomic rename only when they are what the path names. Blocking I/O: call from a thread."""

    def __init__(self, uri: str, sha256: str) -> None:
        self.path, self.sha256 = Path(uri), sha256
        self.limit = get_settings().llm_input_max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0

    def add(self, block: bytes) -> None:
        """Write a block; RefusedRequest (413) once the file is over LLM_INPUT_MAX_BYTES."""
        self.size += len(block)
        if self.size > self.limit:
            raise too_large()
        self.hash.update(block)
        self.file.write(block)

    def keep(self) -> None:
        """Rename the file into place; RefusedRequest (400 naming `sha256`) when its bytes are
        not the ones the path names (nothing is kept)."""
        self.file.close()
        if self.size == 0:
            raise refused_field(400, "(body)", "empty: an input has at least one byte")
        if (got := self.hash.hexdigest()) != self.sha256:
            raise refused_field(400, "sha256", f"the body's SHA-256 is {got}, not this one")
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)
