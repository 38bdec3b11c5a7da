"""The serve endpoint in production mode: syncs signed and pinned, signatures that expire.

The app runs in its own process, started as a user would in production (INNGEST_DEV=0, a
signing key, INNGEST_SERVE_ORIGIN), with its Inngest API pointed at the local stand-in.
Requests are signed exactly as Inngest signs them (the SDK's own `sign_request`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from inngest._internal.net import sign_request

from tests.support import AppProcess, FakeInngestApi

APP_ID = "long-jobs"
SIGNING_KEY = "signkey-prod-" + "cd" * 32
DAY_S = 24 * 3600


@pytest.fixture
def prod(tmp_path: Path, fake_inngest: FakeInngestApi) -> Iterator[AppProcess]:
    from tests.conftest import FAKE_INNGEST_SERVER

    # Any Host accepted, as behind a proxy that passes it on: the pinning must not rely on it.
    with AppProcess(
        tmp_path, SIGNING_KEY, inngest_url=FAKE_INNGEST_SERVER.url, ALLOWED_HOSTS="*"
    ) as app:
        yield app


def signed(body: bytes, unix_s: int | None = None) -> str:
    signature = sign_request(body, SIGNING_KEY, unix_s)
    assert isinstance(signature, str)
    return signature


def start_job_call(run_id: str = "r") -> bytes:
    event = {"name": "demo/start_job", "data": {"total_items": 10, "chunk_size": 5}}
    body = {"ctx": {"attempt": 0, "disable_immediate_execution": False, "run_id": run_id,
                    "stack": {"stack": []}}, "event": event, "events": [event], "steps": {},
            "use_api": False}  # fmt: skip
    return json.dumps(body).encode()


def call(app: AppProcess, body: bytes, headers: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{app.url}/api/inngest",
        params={"fnId": f"{APP_ID}-start-job", "stepId": "step"},
        content=body,
        headers={"content-type": "application/json", **headers},
    )


def jobs(app: AppProcess) -> list[Any]:
    found: list[Any] = httpx.get(f"{app.url}/jobs").json()
    return found


FORGED = {"Host": "attacker.example", "X-Forwarded-Proto": "https",
          "X-Forwarded-Host": "attacker.example"}  # fmt: skip


def test_an_unsigned_sync_is_refused(prod: AppProcess, fake_inngest: FakeInngestApi) -> None:
    response = httpx.put(f"{prod.url}/api/inngest", headers=FORGED)
    assert response.status_code == 401, response.text
    assert fake_inngest.registrations == []
    # In-band (Inngest Cloud's own kind) unsigned: refused too.
    body = json.dumps({"url": "https://attacker.example/api/inngest"}).encode()
    in_band = httpx.put(
        f"{prod.url}/api/inngest",
        content=body,
        headers={**FORGED, "x-inngest-sync-kind": "in_band", "content-type": "application/json"},
    )
    assert in_band.status_code == 401
    assert fake_inngest.registrations == []


def test_a_signed_sync_registers_the_configured_url_not_the_callers(
    prod: AppProcess, fake_inngest: FakeInngestApi
) -> None:
    pinned = f"{AppProcess.SERVE_ORIGIN}/api/inngest"
    response = httpx.put(
        f"{prod.url}/api/inngest", headers={**FORGED, "x-inngest-signature": signed(b"")}
    )
    assert response.status_code == 200, response.text
    [registration] = fake_inngest.registrations
    assert registration["url"] == pinned
    assert all(f["steps"]["step"]["runtime"]["url"].startswith(pinned)
               for f in registration["functions"])  # fmt: skip

    # In-band: the URL Inngest says it used is replaced by the configured one as well.
    body = json.dumps({"url": "https://attacker.example/api/inngest"}).encode()
    in_band = httpx.put(
        f"{prod.url}/api/inngest",
        content=body,
        headers={**FORGED, "x-inngest-sync-kind": "in_band", "content-type": "application/json",
                 "x-inngest-signature": signed(body)},
    )  # fmt: skip
    assert in_band.status_code == 200, in_band.text
    assert in_band.json()["url"] == pinned


@pytest.mark.parametrize(
    ("case", "header"),
    [
        ("30 days old", lambda body: signed(body, int(time.time()) - 30 * DAY_S)),
        ("a day ahead", lambda body: signed(body, int(time.time()) + DAY_S)),
        ("6 minutes old", lambda body: signed(body, int(time.time()) - 360)),
        ("no timestamp", lambda body: "s=" + signed(body, 0).split("&s=")[1]),
        ("non-ASCII timestamp", lambda body: b"t=\xb2&s=" + signed(body).split("&s=")[1].encode()),
    ],
)
def test_a_signature_outside_five_minutes_is_refused(
    prod: AppProcess, case: str, header: Any
) -> None:
    body = start_job_call()
    response = call(prod, body, {"x-inngest-signature": header(body)})
    assert response.status_code == 401, f"{case}: {response.text}"
    assert jobs(prod) == [], f"{case}: the call ran"
    log = prod.logged()
    assert "refused POST /api/inngest" in log
    assert SIGNING_KEY not in log and SIGNING_KEY[-64:] not in log


def test_a_request_replayed_byte_for_byte_runs_once_on_any_replica(
    prod: AppProcess, tmp_path: Path, fake_inngest: FakeInngestApi
) -> None:
    """Replayed to the app that ran it, or to another process on the same job store (a
    replica, or a uvicorn worker), a signed call is refused: the store remembers it."""
    from tests.conftest import FAKE_INNGEST_SERVER

    with AppProcess(
        tmp_path, SIGNING_KEY, inngest_url=FAKE_INNGEST_SERVER.url, ALLOWED_HOSTS="*",
        JOB_STORE_URL=prod.env["JOB_STORE_URL"],
    ) as other:  # fmt: skip
        body = start_job_call()
        headers = {"x-inngest-signature": signed(body)}
        first = call(prod, body, headers)
        assert first.status_code == 206, first.text
        assert len(jobs(prod)) == 1
        for app in (prod, other):
            again = call(app, body, headers)
            assert again.status_code == 401, again.text
            assert "already used" in app.logged()
        assert len(jobs(other)) == 1
        # A fresh signature over a new attempt (what Inngest sends on a retry) is accepted.
        retry = start_job_call(run_id="r2")
        assert call(other, retry, {"x-inngest-signature": signed(retry)}).status_code == 206


def test_production_mode_will_not_start_without_a_serve_origin(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from chunking.settings import Settings

    with pytest.raises(ValidationError, match="INNGEST_SERVE_ORIGIN"):
        Settings(inngest_dev="0", inngest_signing_key=SIGNING_KEY)
    with pytest.raises(ValidationError, match="not an origin"):
        Settings(
            inngest_dev="0", inngest_signing_key=SIGNING_KEY,
            inngest_serve_origin="https://x.example/api/inngest",
        )  # fmt: skip
    ok = Settings(
        inngest_dev="0", inngest_signing_key=SIGNING_KEY, inngest_serve_origin="https://x.example/"
    )
    assert ok.inngest_serve_origin == "https://x.example"
