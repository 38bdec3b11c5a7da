"""An llm job's files through the cloud API alone, on the offline emulation (the `longjobs`
client's two needs): POST /inputs, the presigned PUT to S3 (moto), POST /start with that
input_uri; then GET /jobs/{job_id}/output and /errors, a 307 to a presigned GET of the file.
With tenant keys: each tenant's uploads in its own folder, another tenant's job a 404."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from aws.local.resources import NAMES
from tests.aws.test_emulator import Running, running_emulator
from tests.llm_server import FakeModelServer

BUCKET = NAMES["DataBucket"]
TENANTS = {"acme-id": "acme", "globex-id": "globex"}
LINES = [{"id": "c1", "prompt": "cloud one"}, {"id": "c2", "prompt": "[400-context] too long"},
         {"id": "c3", "prompt": "cloud three"}]  # fmt: skip
DATA = "".join(json.dumps(line) + "\n" for line in LINES).encode()
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(scope="module")
def emulator(model_server: tuple[FakeModelServer, str]) -> Iterator[Running]:
    args = ("--worker-timeout", "20", "--visibility-timeout", "30",  # > timeout: see conftest
            "--parameter", f"OpenAiBaseUrl={model_server[1]}",
            "--more-api-key", "acme-key=acme-id", "--more-api-key", "globex-key=globex-id",
            "--parameter", f"ApiKeyTenants={json.dumps(TENANTS)}")  # fmt: skip
    with running_emulator(*args) as running:
        yield running


def call(emulator: Running, method: str, path: str, key: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{emulator.api}/Prod{path}", headers={"x-api-key": key},
                         json=body, timeout=30)  # fmt: skip


def ended(emulator: Running, job_id: str, key: str, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = call(emulator, "GET", f"/jobs/{job_id}", key).json()
    while status["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
        status = call(emulator, "GET", f"/jobs/{job_id}", key).json()
    return status


def test_an_input_put_to_s3_runs_and_its_files_come_back_from_s3(emulator: Running) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=emulator.moto)
    announced = {"sha256": SHA, "bytes": len(DATA)}
    slot = call(emulator, "POST", "/inputs", "acme-key", announced)
    assert slot.status_code == 200, slot.text
    assert slot.json()["input_uri"] == f"s3://{BUCKET}/inputs/acme/{SHA}.jsonl"
    how = slot.json()["upload"]
    assert how["method"] == "PUT" and how["url"].startswith(f"{emulator.moto}/{BUCKET}/")
    # The SHA-256 is signed into the URL: S3 refuses a body without it (moto does not check).
    checksum = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
    assert how["headers"] == {"x-amz-checksum-sha256": checksum}
    signed = parse_qs(urlsplit(how["url"]).query)["X-Amz-SignedHeaders"][0].split(";")
    assert "x-amz-checksum-sha256" in signed
    assert parse_qs(urlsplit(how["url"]).query)["X-Amz-Expires"] == ["3600"]
    put = httpx.put(how["url"], content=DATA, headers=how["headers"])
    assert put.status_code == 200, put.text
    again = call(emulator, "POST", "/inputs", "acme-key", announced).json()
    assert again == {"input_uri": slot.json()["input_uri"], "upload": None}  # a re-run
    theirs = call(emulator, "POST", "/inputs", "globex-key", announced).json()
    assert theirs["input_uri"] == f"s3://{BUCKET}/inputs/globex/{SHA}.jsonl"
    assert theirs["upload"] is not None
    bad = call(emulator, "POST", "/inputs", "acme-key", {"sha256": SHA, "bytes": True})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "bytes", bad.text
    assert call(emulator, "POST", "/inputs", "nobody", announced).status_code == 403

    spec = {"workload": "llm", "input_uri": slot.json()["input_uri"], "chunk_size": 2}
    started = call(emulator, "POST", "/start", "acme-key", spec)
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    early = call(emulator, "GET", f"/jobs/{job_id}/output", "acme-key")
    if call(emulator, "GET", f"/jobs/{job_id}", "acme-key").json()["status"] == "running":
        assert early.status_code == 409, early.text  # asked before it ended, for sure
        assert "its output file is written when it ends" in early.json()["message"]
    status = ended(emulator, job_id, "acme-key")
    assert status["status"] == "partial", status

    for which in ("output", "errors"):
        answer = call(emulator, "GET", f"/jobs/{job_id}/{which}", "acme-key")
        assert answer.status_code == 307, answer.text
        location = answer.headers["location"]
        assert answer.json() == {"url": location, "expires_in_s": 900}
        assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == ["900"]
        got = httpx.get(location)  # no API key: the URL is the permission
        assert got.status_code == 200, got.text
        key = status[f"{which}_uri"].removeprefix(f"s3://{BUCKET}/")
        assert got.content == s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert call(emulator, "GET", f"/jobs/{job_id}/{which}", "globex-key").status_code == 404
    failed = [json.loads(line)["id"] for line in got.content.decode().splitlines()]
    assert failed == ["c2"]

    simulated = call(emulator, "POST", "/start", "acme-key", {"total_items": 2}).json()["job_id"]
    none = call(emulator, "GET", f"/jobs/{simulated}/errors", "acme-key")
    assert none.status_code == 409 and "simulate job" in none.json()["message"]


def put_input(emulator: Running, key: str, data: bytes) -> str:
    """POST /inputs, then the presigned PUT (if asked): the input_uri."""
    announced = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    slot = call(emulator, "POST", "/inputs", key, announced).json()
    if slot["upload"] is not None:
        put = httpx.put(slot["upload"]["url"], content=data, headers=slot["upload"]["headers"])
        assert put.status_code == 200, put.text
    uri: str = slot["input_uri"]
    return uri


def test_a_tenant_cannot_name_another_tenants_files_as_its_input(emulator: Running) -> None:
    # acme's job, under an id anyone could guess; its output (the test model echoes the
    # prompt) over what a submission reads through (64 KiB): without the check, a job naming
    # it was accepted (202) and its worker read acme's object.
    big = [{"id": "secret", "prompt": "acme's " + "x" * 70_000}]
    acme_input = put_input(emulator, "acme-key", b"".join(json.dumps(x).encode() + b"\n"
                                                          for x in big))  # fmt: skip
    spec = {"workload": "llm", "input_uri": acme_input, "job_id": "acme-report-2026"}
    assert call(emulator, "POST", "/start", "acme-key", spec).status_code == 202
    acme_output = ended(emulator, "acme-report-2026", "acme-key")["output_uri"]
    assert acme_output == f"s3://{BUCKET}/outputs/acme-report-2026/output.jsonl"

    tries = [acme_output, f"s3://{BUCKET}/outputs/no-such-job/output.jsonl", acme_input,
             acme_input.replace("/acme/", "/globex/../acme/"),
             f"s3://{BUCKET}/inputs/globex2/{SHA}.jsonl", "s3://other-bucket/inputs/globex/x",
             f"{emulator.moto}/{BUCKET}/inputs/globex/x"]  # fmt: skip
    messages: set[str] = set()
    for uri in tries:
        attack = call(
            emulator, "POST", "/start", "globex-key", {"workload": "llm", "input_uri": uri}
        )
        assert attack.status_code == 400, (uri, attack.text)
        assert attack.json()["errors"][0]["field"] == "input_uri", attack.text
        messages.add(attack.json()["errors"][0]["message"])
    # The same words whether the object is there or not: where its inputs go, and how.
    assert len(messages) == 1, messages
    message = messages.pop()
    assert f"s3://{BUCKET}/inputs/globex/" in message and "POST /inputs" in message, message

    own = put_input(emulator, "globex-key", DATA.replace(b"[400-context] ", b""))
    started = call(emulator, "POST", "/start", "globex-key", {"workload": "llm", "input_uri": own})
    assert started.status_code == 202, started.text
    assert ended(emulator, started.json()["job_id"], "globex-key")["status"] == "succeeded"
