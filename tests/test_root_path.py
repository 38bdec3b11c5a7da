"""The production guards behind a proxy that strips a path prefix (`uvicorn --root-path /svc`).

There the request's raw path is `/svc/...`: a guard that compared it with `/api/inngest` or
`/jobs` matched nothing and let everything through. The app runs in its own process as a user
would run it there; requests arrive as the proxy sends them, without the prefix.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunking.api_errors import MAX_BODY_BYTES
from tests.support import AppProcess, FakeInngestApi
from tests.test_inngest_signing import APP_ID, SIGNING_KEY, signed, start_job_call

KEY = {"x-api-key": "prefix-key"}
BODY_LIMIT_MESSAGE = f"request body over {MAX_BODY_BYTES} bytes: refused"


@pytest.fixture
def behind_prefix(tmp_path: Path, fake_inngest: FakeInngestApi) -> Iterator[AppProcess]:
    from tests.conftest import FAKE_INNGEST_SERVER

    with AppProcess(
        tmp_path, SIGNING_KEY, inngest_url=FAKE_INNGEST_SERVER.url, root_path="/svc",
        ALLOWED_HOSTS="*", API_KEY=KEY["x-api-key"], INNGEST_PUBLIC_PATH="/svc/api/inngest",
    ) as app:  # fmt: skip
        yield app


def call(app: AppProcess, body: bytes, signature: str) -> httpx.Response:
    return httpx.post(
        f"{app.url}/api/inngest",
        params={"fnId": f"{APP_ID}-start-job", "stepId": "step"},
        content=body,
        headers={"content-type": "application/json", "x-inngest-signature": signature},
    )


def jobs(app: AppProcess) -> list[Any]:
    found: list[Any] = httpx.get(f"{app.url}/jobs", headers=KEY).json()
    return found


def test_signed_calls_are_held_to_their_window_and_run_once(behind_prefix: AppProcess) -> None:
    body = start_job_call()
    an_hour_old = call(behind_prefix, body, signed(body, int(time.time()) - 3600))
    assert an_hour_old.status_code == 401, an_hour_old.text
    assert jobs(behind_prefix) == []
    fresh = signed(body)
    assert call(behind_prefix, body, fresh).status_code == 206
    replayed = call(behind_prefix, body, fresh)
    assert replayed.status_code == 401, replayed.text
    assert len(jobs(behind_prefix)) == 1
    log = behind_prefix.logged()
    assert "signature timestamp" in log and "already used" in log


def test_a_large_body_is_refused_as_it_arrives(behind_prefix: AppProcess) -> None:
    big = b'{"fail_chunks": [' + b"1," * MAX_BODY_BYTES + b"1]}"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 65_536):
            yield big[i : i + 65_536]

    for path in ("/jobs", "/cloud/jobs", "/inputs"):
        for content in (big, chunks()):
            response = httpx.post(
                f"{behind_prefix.url}{path}", content=content,
                headers={"content-type": "application/json", **KEY}, timeout=30,
            )  # fmt: skip
            # The guard's answer, not the route's after reading it whole (or forwarding it).
            assert response.status_code == 413, (path, response.text)
            assert response.json() == {"message": BODY_LIMIT_MESSAGE}, path
    assert jobs(behind_prefix) == []


def test_an_input_past_the_json_body_limit_is_sent_whole(behind_prefix: AppProcess) -> None:
    """PUT /inputs/{sha256} streams a whole input: the 1 MiB limit on POST /inputs is on that
    exact path, not on what starts with it."""
    data = b'{"id": "1", "prompt": "' + b"x" * MAX_BODY_BYTES + b'"}\n'
    sha = hashlib.sha256(data).hexdigest()
    slot = httpx.post(f"{behind_prefix.url}/inputs", json={"sha256": sha, "bytes": len(data)},
                      headers=KEY).json()  # fmt: skip
    sent = httpx.put(f"{behind_prefix.url}{slot['upload']['url']}", content=data, headers=KEY)
    assert sent.status_code == 201, sent.text
    assert sent.json() == {"input_uri": slot["input_uri"]}
    again = httpx.post(f"{behind_prefix.url}/inputs", json={"sha256": sha, "bytes": len(data)},
                       headers=KEY).json()  # fmt: skip
    assert again["upload"] is None


def test_the_route_guards_hold(behind_prefix: AppProcess) -> None:
    url = behind_prefix.url
    assert httpx.get(f"{url}/jobs").status_code == 401
    assert httpx.post(f"{url}/jobs", json={}).status_code == 401
    cross = {"sec-fetch-site": "cross-site", **KEY}
    assert httpx.post(f"{url}/jobs", json={}, headers=cross).status_code == 403
    assert httpx.post(f"{url}/jobs", data={"total_items": "1"}, headers=KEY).status_code == 415
    assert jobs(behind_prefix) == []


def test_a_sync_registers_the_public_path(
    behind_prefix: AppProcess, fake_inngest: FakeInngestApi
) -> None:
    assert httpx.put(f"{behind_prefix.url}/api/inngest").status_code == 401  # unsigned
    response = httpx.put(
        f"{behind_prefix.url}/api/inngest", headers={"x-inngest-signature": signed(b"")}
    )
    assert response.status_code == 200, response.text
    [registration] = fake_inngest.registrations
    assert registration["url"] == f"{AppProcess.SERVE_ORIGIN}/svc/api/inngest"
