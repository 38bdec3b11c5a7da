"""An llm job's files through the local API alone (the `longjobs` client's two needs): its input
sent with POST /inputs and PUT /inputs/{sha256}, named by content in the caller's folder; its
merged output and errors file read back with GET /jobs/{job_id}/output and /errors, streamed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunking.tenancy import key_digest
from tests.executor import StandInExecutor, ended
from tests.llm_server import FakeModelServer
from tests.support import set_settings

LINES = [{"id": "r1", "prompt": "fine"}, {"id": "r2", "prompt": "[400-context] too long"},
         {"id": "r3", "prompt": "also fine"}]  # fmt: skip
DATA = "".join(json.dumps(line) + "\n" for line in LINES).encode()
SHA = hashlib.sha256(DATA).hexdigest()
TENANT_KEYS = {"acme-key": "acme", "globex-key": "globex", "ops-key": "*"}


def announce(api: httpx.Client, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return api.post("/inputs", json=body, headers=headers)


def streamed(data: bytes, block: int = 7) -> Iterator[bytes]:
    """The body in small blocks, with no Content-Length: counted as it arrives."""
    for i in range(0, len(data), block):
        yield data[i : i + block]


def upload(api: httpx.Client, data: bytes, headers: dict[str, str] | None = None) -> str:
    """POST /inputs, then the PUT it asks for (if any): the input_uri."""
    slot = announce(api, {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
                    headers)  # fmt: skip
    assert slot.status_code == 200, slot.text
    how = slot.json()["upload"]
    if how is not None:
        assert how["method"] == "PUT"
        sent = api.put(how["url"], content=streamed(data), headers=how["headers"] | (headers or {}))
        assert sent.status_code == 201, sent.text
        assert sent.json() == {"input_uri": slot.json()["input_uri"]}
    uri: str = slot.json()["input_uri"]
    return uri


def field_of(response: httpx.Response) -> str:
    field: str = response.json()["errors"][0]["field"]
    return field


def test_an_input_is_sent_once_and_only_as_announced(
    api: httpx.Client, isolated_store: Path
) -> None:
    folder = isolated_store.parent / "uploads" / "shared"
    slot = announce(api, {"sha256": SHA, "bytes": len(DATA)})
    assert slot.status_code == 200, slot.text
    assert slot.json() == {
        "input_uri": str(folder / f"{SHA}.jsonl"),
        "upload": {"method": "PUT", "url": f"/inputs/{SHA}", "headers": {}},
    }

    other = DATA.replace(b"fine", b"FINE")
    wrong = api.put(f"/inputs/{SHA}", content=streamed(other))
    assert wrong.status_code == 400 and field_of(wrong) == "sha256", wrong.text
    assert list(folder.iterdir()) == []  # nothing kept, not even the temporary file
    assert api.put(f"/inputs/{SHA}", content=b"").status_code == 400

    assert upload(api, DATA) == str(folder / f"{SHA}.jsonl")
    assert (folder / f"{SHA}.jsonl").read_bytes() == DATA
    assert [p.name for p in folder.iterdir()] == [f"{SHA}.jsonl"]
    again = announce(api, {"sha256": SHA, "bytes": len(DATA)}).json()
    assert again == {"input_uri": str(folder / f"{SHA}.jsonl"), "upload": None}  # a re-run
    # Another size than the file there: sent again (it was cut short, or is another file).
    assert announce(api, {"sha256": SHA, "bytes": len(DATA) + 1}).json()["upload"] is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [({"sha256": SHA.upper(), "bytes": 5}, "sha256"), ({"sha256": SHA[:-1], "bytes": 5}, "sha256"),
     ({"sha256": 5, "bytes": 5}, "sha256"), ({"bytes": 5}, "sha256"),
     ({"sha256": SHA, "bytes": True}, "bytes"), ({"sha256": SHA, "bytes": 5.0}, "bytes"),
     ({"sha256": SHA, "bytes": "5"}, "bytes"), ({"sha256": SHA, "bytes": 0}, "bytes"),
     ({"sha256": SHA}, "bytes"), ({"sha256": SHA, "bytes": 5, "name": "x"}, "name")],
)  # fmt: skip
def test_a_bad_announcement_is_400_naming_the_field(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = announce(api, body)
    assert response.status_code == 400, response.text
    assert field_of(response) == field and field in response.json()["message"]


def test_bad_bodies_and_paths_are_400(api: httpx.Client) -> None:
    for raw in (b"[1]", b"not json", b""):
        response = api.post("/inputs", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400 and "message" in response.json(), raw
    for bad in (SHA.upper(), "abc", f"{SHA}0"):
        response = api.put(f"/inputs/{bad}", content=DATA)
        assert response.status_code == 400 and field_of(response) == "sha256", bad


def test_over_the_cap_is_413_and_nothing_is_kept(
    api: httpx.Client, isolated_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_settings(monkeypatch, LLM_INPUT_MAX_BYTES=str(len(DATA) - 1))
    big = announce(api, {"sha256": SHA, "bytes": len(DATA)})
    assert big.status_code == 413 and field_of(big) == "bytes", big.text
    for content in (DATA, streamed(DATA)):  # with a Content-Length, and counted as it comes
        response = api.put(f"/inputs/{SHA}", content=content)
        assert response.status_code == 413, response.text
    folder = isolated_store.parent / "uploads" / "shared"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_each_tenant_has_its_own_folder(
    api: httpx.Client, isolated_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_settings(monkeypatch, API_KEYS=json.dumps({key_digest(k): t for k, t in
                                                    TENANT_KEYS.items()}))  # fmt: skip
    root = isolated_store.parent / "uploads"
    acme, globex = {"x-api-key": "acme-key"}, {"x-api-key": "globex-key"}
    assert upload(api, DATA, acme) == str(root / "acme" / f"{SHA}.jsonl")
    # The same file is not there for globex: its own folder, its own upload.
    theirs = announce(api, {"sha256": SHA, "bytes": len(DATA)}, globex).json()
    assert theirs["input_uri"] == str(root / "globex" / f"{SHA}.jsonl")
    assert theirs["upload"] is not None
    assert not (root / "globex").exists()
    operator = announce(api, {"sha256": SHA, "bytes": len(DATA)}, {"x-api-key": "ops-key"})
    assert operator.json()["input_uri"] == str(root / "shared" / f"{SHA}.jsonl")
    assert announce(api, {"sha256": SHA, "bytes": 1}).status_code == 401
    assert api.put(f"/inputs/{SHA}", content=DATA).status_code == 401
    cross = {"sec-fetch-site": "cross-site", **globex}
    assert api.put(f"/inputs/{SHA}", content=DATA, headers=cross).status_code == 403

    # An acme job's files: 404 for globex, exactly as a job that is not there.
    spec = {"workload": "llm", "input_uri": str(root / "acme" / f"{SHA}.jsonl")}
    set_settings(monkeypatch, OPENAI_BASE_URL="http://127.0.0.1:9/v1")  # never called here
    accepted = api.post("/jobs", json=spec, headers=acme)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    for which in ("output", "errors"):
        theirs_file = api.get(f"/jobs/{job_id}/{which}", headers=globex)
        assert theirs_file.status_code == 404
        assert theirs_file.json() == {"message": f"no job with job_id {job_id!r}"}
        assert api.get(f"/jobs/{job_id}/{which}", headers=acme).status_code == 409


def test_files_before_the_end_and_of_a_job_that_writes_none_are_409(
    api: httpx.Client, model: FakeModelServer
) -> None:
    uri = upload(api, DATA)
    job_id = api.post("/jobs", json={"workload": "llm", "input_uri": uri}).json()["job_id"]
    early = api.get(f"/jobs/{job_id}/output")  # no executor: it stays queued
    assert early.status_code == 409
    assert early.json() == {
        "message": f"job {job_id!r} is queued: its output file is written when it ends"
    }
    simulated = api.post("/jobs", json={"total_items": 2, "chunk_size": 1}).json()["job_id"]
    for which in ("output", "errors"):
        none = api.get(f"/jobs/{simulated}/{which}")
        assert none.status_code == 409 and "simulate job" in none.json()["message"]
    assert api.get("/jobs/nope/output").status_code == 404


def test_a_job_of_an_uploaded_input_serves_its_output_and_errors_byte_for_byte(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer
) -> None:
    uri = upload(api, DATA)
    accepted = api.post("/jobs", json={"workload": "llm", "input_uri": uri, "chunk_size": 2})
    assert accepted.status_code == 202, accepted.text
    status = ended(api, accepted.json()["job_id"])
    assert (status["status"], status["total_items"]) == ("partial", 3)

    for which, uri_key in (("output", "output_uri"), ("errors", "errors_uri")):
        with api.stream("GET", f"/jobs/{status['job_id']}/{which}") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson"
            served = b"".join(response.iter_bytes())
        assert served == Path(status[uri_key]).read_bytes(), which
    failed = [json.loads(line) for line in Path(status["errors_uri"]).read_text().splitlines()]
    assert [f["id"] for f in failed] == ["r2"]

    clean = [{"id": "ok", "prompt": "fine"}]
    done = ended(api, api.post("/jobs", json={"workload": "llm", "items": clean}).json()["job_id"])
    assert done["status"] == "succeeded"
    none = api.get(f"/jobs/{done['job_id']}/errors")
    assert none.status_code == 409
    assert none.json()["message"] == f"job {done['job_id']!r} has no errors file: no item failed"
