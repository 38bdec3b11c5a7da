"""The local /jobs API refuses what it must, with a 4xx naming why, and records nothing then.

Over real HTTP (the app on a free port), as an attacker or a careless client would send it.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from tests.support import FakeInngestApi

JSON = {"content-type": "application/json"}


def assert_nothing_recorded(api: httpx.Client, fake_inngest: FakeInngestApi) -> None:
    assert api.get("/jobs").json() == []
    assert fake_inngest.events == []


def post_raw(api: httpx.Client, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return api.post("/jobs", content=body, headers={**JSON, **(headers or {})})


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b'{"total_items": NaN}', "NaN"),
        (b'{"total_items": Infinity}', "Infinity"),
        (b'{"total_items": -Infinity}', "-Infinity"),
        (b'{"total_items": 1e400}', "out of range"),
        (b'{"total_items": ' + b"9" * 5000 + b"}", "too many digits"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (b'{"total_items": 10, "tenant": "\xff\xfe"}', "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'{"total_items": ', "not valid JSON"),
    ],
)
def test_bodies_json_cannot_carry_are_a_400_naming_the_problem(
    api: httpx.Client, fake_inngest: FakeInngestApi, body: bytes, names: str
) -> None:
    response = post_raw(api, body)
    assert response.status_code == 400, response.text
    assert names in response.json()["message"]
    assert_nothing_recorded(api, fake_inngest)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ('{"tenant": "a\\ud800"}', "tenant"),
        ('{"prompt_template": "x {text} \\ud800", "workload": "llm"}', "prompt_template"),
        ('{"callback_url": "https://x.example/\\udfff"}', "callback_url"),
        ('{"total_items": 100, "chunk_size": 1, "fail_chunks": [' + "100," * 20_000 + "1]}",
         "fail_chunks"),
        ('{"total_items": 100000, "chunk_size": 1, "flaky_chunks": {'
         + ",".join(f'"{i}": 1' for i in range(10_001)) + "}}", "flaky_chunks"),
    ],
)  # fmt: skip
def test_fields_that_no_store_can_hold_are_a_400_naming_the_field(
    api: httpx.Client, fake_inngest: FakeInngestApi, spec: str, field: str
) -> None:
    response = post_raw(api, spec.encode())
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert field in [e["field"] for e in errors], errors
    assert_nothing_recorded(api, fake_inngest)


def test_an_error_never_echoes_more_than_a_bounded_prefix(
    api: httpx.Client, fake_inngest: FakeInngestApi
) -> None:
    # 10,000 bad entries (the most a list may have): one error each, each echoing its input.
    body = b'{"fail_chunks": [' + b"-1," * 9_999 + b"-1]}"
    response = post_raw(api, body)
    assert response.status_code == 400
    assert len(response.content) < 10_000
    errors = response.json()["errors"]
    assert errors[-1]["message"].startswith("and ") and "more problems" in errors[-1]["message"]
    assert_nothing_recorded(api, fake_inngest)


def test_a_body_over_one_megabyte_is_a_413_before_it_is_parsed(
    api: httpx.Client, fake_inngest: FakeInngestApi
) -> None:
    big = json.dumps({"fail_chunks": list(range(300_000))}).encode()
    assert len(big) > 1_048_576
    assert post_raw(api, big).status_code == 413

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 65_536):
            yield big[i : i + 65_536]

    streamed = api.post("/jobs", content=chunks(), headers=JSON)
    assert streamed.status_code == 413
    assert_nothing_recorded(api, fake_inngest)


def test_post_jobs_takes_json_only(api: httpx.Client, fake_inngest: FakeInngestApi) -> None:
    # What a page of another site can send without asking (no preflight): all refused.
    assert api.post("/jobs").status_code == 415
    form = api.post("/jobs", data={"total_items": "10"})
    assert form.status_code == 415 and "application/json" in form.json()["message"]
    text = api.post("/jobs", content=b"{}", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    assert_nothing_recorded(api, fake_inngest)
    # A JSON content type with an empty body is the configured defaults, as before.
    assert api.post("/jobs", headers=JSON).status_code == 202


def test_a_browser_request_from_another_site_cannot_change_jobs(
    api: httpx.Client, fake_inngest: FakeInngestApi
) -> None:
    created = api.post("/jobs", json={"total_items": 10, "chunk_size": 5}).json()
    fake_inngest.reset()
    cross = {"sec-fetch-site": "cross-site"}
    assert api.post("/jobs", json={}, headers=cross).status_code == 403
    cancel = api.post(f"/jobs/{created['job_id']}/cancel", headers=cross)
    assert cancel.status_code == 403
    assert api.get(f"/jobs/{created['job_id']}").json()["status"] == "queued"
    assert fake_inngest.events == []
    # Reading is not changing: the same browser may still look.
    assert api.get("/jobs", headers=cross).status_code == 200


def test_api_key_guards_every_jobs_route_when_set(
    api: httpx.Client, fake_inngest: FakeInngestApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunking.settings import get_settings

    job_id = api.post("/jobs", json={"total_items": 10, "chunk_size": 5}).json()["job_id"]
    monkeypatch.setenv("API_KEY", "s3cret-key")
    get_settings.cache_clear()
    routes = [("GET", "/jobs"), ("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/events"),
              ("POST", f"/jobs/{job_id}/cancel"), ("POST", "/jobs")]  # fmt: skip
    for method, path in routes:
        for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": "s3cret-key-but-longer"}):
            response = api.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
    assert api.get(f"/jobs/{job_id}").json() == {"message": "missing or wrong x-api-key"}
    assert len(fake_inngest.named("demo/start_job")) == 1  # only the first, keyless-era job
    good = {"x-api-key": "s3cret-key"}
    assert api.get(f"/jobs/{job_id}", headers=good).json()["status"] == "queued"
    assert api.post("/jobs", json={"total_items": 10}, headers=good).status_code == 202
    # The API docs name the key on every /jobs route, POST /jobs (which checks it itself) too.
    paths = api.get("/openapi.json").json()["paths"]
    for method, path in (("post", "/jobs"), ("get", "/jobs"), ("get", "/jobs/{job_id}")):
        assert paths[path][method]["security"] == [{"APIKeyHeader": []}], (method, path)
    # Health and the Inngest endpoint (which has its own signing) stay as they are.
    assert api.get("/healthz").status_code == 200
    assert api.get("/api/inngest").status_code == 200


def test_a_foreign_host_header_is_refused(api: httpx.Client) -> None:
    # DNS rebinding: a page on evil.example whose name now points at 127.0.0.1.
    assert api.get("/jobs", headers={"host": "evil.example"}).status_code == 400
    assert api.get("/jobs", headers={"host": "localhost:8000"}).status_code == 200


def raw_get(url: str, path: str, header: bytes) -> bytes:
    """A GET with a header httpx would not send (non-ASCII bytes), over a plain socket."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
            + header + b"\r\n\r\n"
        )  # fmt: skip
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


@pytest.mark.parametrize(
    "value", ["²".encode("latin-1"), b"9" * 5000, b"99999999999999999999", b"-1", b"1e3", b" "]
)
def test_last_event_id_must_be_a_small_number(api: httpx.Client, value: bytes) -> None:
    job_id = api.post("/jobs", json={"total_items": 10, "chunk_size": 5}).json()["job_id"]
    reply = raw_get(str(api.base_url), f"/jobs/{job_id}/events", b"Last-Event-ID: " + value)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:300]
    assert b"Last-Event-ID" in reply


def test_a_stream_that_fails_after_its_200_ends_with_an_error_event(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stores.sqlite import SqliteJobStore

    job_id = api.post("/jobs", json={"total_items": 10, "chunk_size": 5}).json()["job_id"]
    calls = 0
    real = SqliteJobStore.settled_since

    def flaky(self: SqliteJobStore, job: str, after: int, limit: int) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("disk I/O error")
        return real(self, job, after, limit)

    monkeypatch.setattr(SqliteJobStore, "settled_since", flaky)
    with api.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    assert "event: status" in text
    assert "event: error" in text and "disk I/O error" in text


@pytest.fixture
def unreachable_s3(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    from tests.support import free_port
    from workloads.llm import blobs

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    blobs.s3_client.cache_clear()
    yield
    blobs.s3_client.cache_clear()


def test_an_input_on_an_s3_that_does_not_answer_is_a_503_saying_so(
    api: httpx.Client, fake_inngest: FakeInngestApi, model: Any, unreachable_s3: None
) -> None:
    spec = {"workload": "llm", "input_uri": "s3://data/in.jsonl", "prompt_template": "{text}"}
    response = api.post("/jobs", json=spec)
    assert response.status_code == 503, response.text
    assert "S3 could not be reached" in response.json()["message"]
    assert_nothing_recorded(api, fake_inngest)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("nul byte", lambda root: f"{root}/a\x00b.jsonl"),
        ("name over 255 bytes", lambda root: f"{root}/{'x' * 300}.jsonl"),
        ("symlink loop", lambda root: _loop(root)),
    ],
)
def test_input_paths_no_file_can_have_are_a_400_naming_input_uri(
    api: httpx.Client, fake_inngest: FakeInngestApi, model: Any, tmp_path: Any, name: str,
    make: Any,
) -> None:  # fmt: skip
    spec = {"workload": "llm", "input_uri": make(tmp_path), "prompt_template": "{text}"}
    response = api.post("/jobs", json=spec)
    assert response.status_code == 400, f"{name}: {response.text}"
    assert response.json()["errors"][0]["field"] == "input_uri", name
    assert_nothing_recorded(api, fake_inngest)


def _loop(root: Any) -> str:
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    return str(root / "loop-a")
