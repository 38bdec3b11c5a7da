"""What an llm input_uri may make the service read (security review, issue 10 points 4 and 5).

- A local input is read only from a regular file under LLM_INPUT_ROOT, checked at every read
  (submission and each chunk), on the file actually opened.
- What a submission reads is bounded: the file by its size, each line by MAX_LINE_BYTES.
- An unusable input_uri is a clear error naming input_uri; an S3 that does not answer is
  InputUnavailableError (a 503), never a 500.
"""

from __future__ import annotations

import asyncio
import json
import os
import tracemalloc
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from pydantic import ValidationError

from chunking import lifecycle
from chunking.api_errors import field_errors
from chunking.prepare import prepare_spec
from chunking.runner import AttemptOutcome, attempt_chunk
from chunking.settings import get_settings
from chunking.spec import JobSpec
from stores.sqlite import SqliteJobStore
from tests.chunking.llm_chunks import build_all
from tests.llm_server import FakeModelServer
from tests.support import free_port
from workloads.llm import blobs
from workloads.llm.index import build_index, chunk_items, index_uri
from workloads.llm.input import MAX_LINE_BYTES, InputError, InputUnavailableError

SECRET = "SECRET outside the root"


def write_input(path: Path, prompts: list[str]) -> str:
    path.write_text(
        "".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(prompts))
    )
    return str(path)


def input_error(uri: str, where: str = "local") -> str:
    """The message prepare_spec gives for input_uri (it must come as a field error)."""
    with pytest.raises(ValidationError) as info:
        prepare_spec(
            JobSpec(workload="llm", input_uri=uri), "cloud" if where == "cloud" else "local"
        )
    return {e["field"]: e["message"] for e in field_errors(info.value)}["input_uri"]


def run_attempt(store: SqliteJobStore, job_id: str, index: int) -> AttemptOutcome:
    return asyncio.get_event_loop().run_until_complete(
        attempt_chunk(store, job_id, index, last_attempt=False, budget_s=30)
    )


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder beside LLM_INPUT_ROOT (each test's tmp_path), holding a secret input."""
    folder = tmp_path_factory.mktemp("outside")
    write_input(folder / "in.jsonl", [SECRET, SECRET])
    return folder


# --- A: local inputs stay inside LLM_INPUT_ROOT at every read -----------------------------------


def test_a_symlink_repointed_outside_after_submission_fails_the_chunk_permanently(
    model: FakeModelServer, tmp_path: Path, outside: Path
) -> None:
    link = tmp_path / "in.jsonl"
    link.symlink_to(write_input(tmp_path / "real.jsonl", ["inside 0", "inside 1"]))
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    spec = prepare_spec(JobSpec(workload="llm", input_uri=str(link), chunk_size=2), "local")
    store.create_job("job", spec, "local")
    assert lifecycle.plan(store, "job", None, None).started  # indexed while it was inside

    link.unlink()
    link.symlink_to(outside / "in.jsonl")
    outcome = run_attempt(store, "job", 0)  # not last_attempt: a retryable error would raise

    assert outcome.outcome == "failed" and outcome.recorded
    error = str(outcome.error)
    assert error.startswith("permanent:")
    assert repr(str(link)) in error and "not found or not allowed" in error
    assert SECRET not in error
    assert not any(SECRET in prompt for prompt in model.calls)
    assert sum(model.calls.values()) == 0


def swap_dir_on_open(
    monkeypatch: pytest.MonkeyPatch, folder: Path, target: Path, *, swap_back: bool = False
) -> None:
    """Between the reader's check and its open of a file in `folder`, `folder` becomes a
    symlink to `target`."""
    real_open = os.open
    real_folder = os.path.realpath(folder)

    def open_after_swap(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if not str(path).startswith(real_folder + os.sep):  # e.g. the job's index
            return real_open(path, flags, *args, **kwargs)
        monkeypatch.setattr(os, "open", real_open)  # once
        folder.rename(folder.with_name("was-" + folder.name))
        folder.symlink_to(target, target_is_directory=True)
        fd = real_open(path, flags, *args, **kwargs)
        if swap_back:
            folder.unlink()
            folder.with_name("was-" + folder.name).rename(folder)
        return fd

    monkeypatch.setattr(os, "open", open_after_swap)


def test_a_folder_swapped_for_a_symlink_between_check_and_open_is_refused(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "d").mkdir()
    uri = write_input(tmp_path / "d" / "in.jsonl", ["inside"])
    index_at = str(tmp_path / "input.index")
    assert build_all(uri, None, 5, index_at) == 1
    swap_dir_on_open(monkeypatch, tmp_path / "d", outside, swap_back=True)
    with pytest.raises(InputError, match="not found or not allowed") as info:
        chunk_items(uri, None, index_at, 0, 0, 1)
    assert "changed as it was opened" in str(info.value.__cause__)


def test_without_proc_a_swapped_folder_is_still_refused(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_readlink = os.readlink

    def no_proc(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(path)
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", no_proc)
    (tmp_path / "d").mkdir()
    uri = write_input(tmp_path / "d" / "in.jsonl", ["inside"])
    index_at = str(tmp_path / "input.index")
    assert build_all(uri, None, 5, index_at) == 1
    assert [item.prompt for item in chunk_items(uri, None, index_at, 0, 0, 1)] == ["inside"]
    swap_dir_on_open(monkeypatch, tmp_path / "d", outside)
    with pytest.raises(InputError, match="not found or not allowed"):
        chunk_items(uri, None, index_at, 0, 0, 1)


def test_a_fifo_is_refused_at_submission_and_at_read(
    model: FakeModelServer, tmp_path: Path
) -> None:
    # Indexed while it was a file, then swapped for a FIFO before the chunk reads it.
    uri = write_input(tmp_path / "fifo.jsonl", ["p"])
    index_at = str(tmp_path / "input.index")
    assert build_all(uri, None, 5, index_at) == 1
    os.unlink(uri)
    os.mkfifo(uri)  # no writer: a blocking open would wait for ever
    assert "a FIFO (named pipe), not a regular file" in input_error(uri)
    with pytest.raises(InputError, match="FIFO"):
        build_index(uri, None, 5, str(tmp_path / "again.index"))
    with pytest.raises(InputError, match="FIFO"):
        chunk_items(uri, None, index_at, 0, 0, 1)


def test_a_device_is_refused_even_under_the_root(
    model: FakeModelServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A chunk's index, of a file; the chunk is then pointed at a device under the root.
    index_at = str(tmp_path / "input.index")
    assert build_all(write_input(tmp_path / "in.jsonl", ["p"]), None, 5, index_at) == 1
    assert "not found or not allowed" in input_error("/dev/zero")
    monkeypatch.setenv("LLM_INPUT_ROOT", "/dev")
    get_settings.cache_clear()
    assert "a device, not a regular file" in input_error("/dev/zero")
    with pytest.raises(InputError, match="a device"):
        build_index("/dev/zero", None, 5, str(tmp_path / "again.index"))
    with pytest.raises(InputError, match="a device"):
        chunk_items("/dev/zero", None, index_at, 0, 0, 1)


# --- C: input_uri values that used to be 500s --------------------------------------------------


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda root: f"{root}/in\x00.jsonl", "not a usable path (embedded null byte)"),
        (lambda root: f"{root}/{'n' * 256}.jsonl", "is too long"),
        (lambda root: str(root / "loop"), "a symlink loop"),
        (lambda root: str(root), "a directory, not a regular file"),
        (lambda root: str(root / "in.jsonl" / "x"), "not found or not allowed"),  # file as folder
    ],
    ids=["nul-byte", "name-over-255-bytes", "symlink-loop", "directory", "not-a-directory"],
)
def test_unusable_paths_are_field_errors_naming_input_uri(
    model: FakeModelServer, tmp_path: Path, make: Any, words: str
) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop")
    write_input(tmp_path / "in.jsonl", ["p"])
    uri = make(tmp_path)
    message = input_error(uri)
    assert f"input_uri {uri!r}"[:70] in message and words in message


@pytest.fixture
def unreachable_s3(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    blobs.s3_client.cache_clear()
    yield
    blobs.s3_client.cache_clear()


def test_s3_that_cannot_be_reached_is_unavailable_not_a_bad_request(
    model: FakeModelServer, unreachable_s3: None
) -> None:
    with pytest.raises(InputUnavailableError) as info:
        prepare_spec(JobSpec(workload="llm", input_uri="s3://data/in.jsonl"), "cloud")
    message = str(info.value)
    assert message.startswith("input_uri 's3://data/in.jsonl' cannot be read now")
    assert "S3 could not be reached (EndpointConnectionError)" in message
    assert "testing" not in message  # the credentials


def test_s3_without_credentials_is_unavailable(
    model: FakeModelServer, unreachable_s3: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps what it found earlier
    with pytest.raises(InputUnavailableError, match="no usable AWS credentials"):
        prepare_spec(JobSpec(workload="llm", input_uri="s3://data/in.jsonl"), "cloud")


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("InternalError", 500)])
def test_s3_throttling_or_failing_is_unavailable(
    model: FakeModelServer, aws_env: None, code: str, status: int
) -> None:
    blobs.s3_client.cache_clear()
    with Stubber(blobs.s3_client()) as stub:
        stub.add_client_error("head_object", service_error_code=code, http_status_code=status)
        with pytest.raises(InputUnavailableError, match=f"unavailable or throttling \\({code}\\)"):
            prepare_spec(JobSpec(workload="llm", input_uri="s3://data/in.jsonl"), "cloud")
    blobs.s3_client.cache_clear()


def test_a_chunk_retries_when_s3_cannot_be_reached(tmp_path: Path, unreachable_s3: None) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    spec = JobSpec(workload="llm", input_uri="s3://data/in.jsonl", chunk_size=2)
    store.create_job("job", spec, "local")
    # Indexed while S3 answered (here: the same lines, indexed from a local copy).
    copy = write_input(tmp_path / "copy.jsonl", ["p 0", "p 1"])
    build_index(copy, None, 2, index_uri(get_settings().llm_output_uri, "job"))
    assert store.set_plan("job", 2) and store.start_job("job")
    with pytest.raises(InputUnavailableError):  # raised: the platform retries it
        run_attempt(store, "job", 0)


# --- B: what one submission may read is bounded -------------------------------------------------


def test_an_input_over_the_size_limit_is_refused_from_its_size(
    model: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as f:
        f.truncate(8 * 2**30)  # sparse: 8 GiB that take no room; read, it would fail on line 1
    message = input_error(str(huge))
    assert f"{8 * 2**30} bytes, over the limit of {2 * 2**30} bytes" in message
    assert "LLM_INPUT_MAX_BYTES raises it" in message

    good = write_input(tmp_path / "good.jsonl", [f"prompt {i}" for i in range(10)])  # 300 bytes
    index_at = str(tmp_path / "input.index")
    assert build_all(good, None, 10, index_at) == 10  # indexed before the limit was lowered
    monkeypatch.setenv("LLM_INPUT_MAX_BYTES", "100")
    get_settings.cache_clear()
    assert "over the limit of 100 bytes" in input_error(good)
    assert len(chunk_items(good, None, index_at, 0, 0, 10)) == 10  # its own items, unbounded


def test_a_line_without_end_is_refused_having_read_about_one_line_bound(tmp_path: Path) -> None:
    path = tmp_path / "one-line.jsonl"
    with path.open("wb") as f:
        f.write(b'{"id": 1, "prompt": "fine"}\n')
        f.truncate(32 * 2**20)  # then 32 MiB of NUL bytes, no newline: under the size limit
    index_at, max_bytes = str(tmp_path / "input.index"), get_settings().llm_input_max_bytes
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=f"line 2: longer than {MAX_LINE_BYTES} bytes"):
            # The job's read of a file this size (a submission reads only a small one through).
            build_index(str(path), None, 10, index_at, max_bytes=max_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_LINE_BYTES  # one line bound and a block, not the 32 MiB


def test_s3_inputs_are_bounded_too(
    model: FakeModelServer, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mock_aws():
        blobs.s3_client.cache_clear()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="data")
        s3.put_object(Bucket="data", Key="long.jsonl", Body=b"x" * (MAX_LINE_BYTES + 1))
        # Over FULL_CHECK_BYTES: not read at submission, refused by the job's indexing.
        with pytest.raises(InputError, match="line 1: longer than"):
            build_index("s3://data/long.jsonl", None, 10, "s3://data/long.index")
        s3.put_object(Bucket="data", Key="in.jsonl", Body=b'{"id": 1, "prompt": "p"}\n' * 10)
        monkeypatch.setenv("LLM_INPUT_MAX_BYTES", "100")
        get_settings.cache_clear()
        assert "250 bytes, over the limit of 100 bytes" in input_error(
            "s3://data/in.jsonl", "cloud"
        )
        assert "not a valid S3 bucket and key" in input_error("s3://no such bucket/x", "cloud")
    blobs.s3_client.cache_clear()


def test_line_splitting_stays_bounded_on_an_endless_stream() -> None:
    endless = repeat(b"x" * blobs.READ_BLOCK_BYTES)  # by construction, never held whole
    with pytest.raises(blobs.LineTooLongError):
        list(blobs._split_lines("u", endless, None, MAX_LINE_BYTES))
    endless_lines = repeat(b"{}\n" * 1000)  # and a stream that outgrows its size as it is read
    with pytest.raises(blobs.FileTooLargeError):
        list(blobs._split_lines("u", endless_lines, 2**20, MAX_LINE_BYTES))
