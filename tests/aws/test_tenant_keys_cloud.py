"""Tenant keys on the cloud API (issue 25 point 1), through the offline emulation: API Gateway
keys whose ids API_KEY_TENANTS (the stack's ApiKeyTenants) maps to tenants; the same rules as
the local API's (tests/test_tenant_keys.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.aws.test_emulator import Running, running_emulator

TENANTS = {"acme-id": "acme", "globex-id": "globex", "ops-id": "*"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Running]:
    args = ("--more-api-key", "acme-key=acme-id", "--more-api-key", "globex-key=globex-id",
            "--more-api-key", "ops-key=ops-id",
            "--parameter", f"ApiKeyTenants={json.dumps(TENANTS)}")  # fmt: skip
    with running_emulator(*args) as running:
        yield running


def call(emulator: Running, method: str, path: str, key: str, **body: Any) -> httpx.Response:
    return httpx.request(method, f"{emulator.api}/Prod{path}", headers={"x-api-key": key},
                         json=body or None, timeout=30)  # fmt: skip


def test_each_tenant_sees_and_touches_only_its_own_jobs(emulator: Running) -> None:
    spec = {"total_items": 4, "chunk_size": 2, "item_delay_ms": 0, "fail_chunks": [1]}
    accepted = call(emulator, "POST", "/start", "acme-key", job_id="cloud-acme", **spec)
    assert accepted.status_code == 202, accepted.text
    other = call(emulator, "POST", "/start", "acme-key", job_id="cloud-x", tenant="globex")
    assert other.status_code == 400 and other.json()["errors"][0]["field"] == "tenant"
    assert call(emulator, "POST", "/start", "globex-key", job_id="cloud-globex",
                **spec).status_code == 202  # fmt: skip
    # The stack's own key is mapped to no tenant: refused once tenant keys are on.
    assert call(emulator, "GET", "/jobs", "emulator-test-key").status_code == 403

    for job_id, key in (("cloud-acme", "acme-key"), ("cloud-globex", "globex-key")):
        status = call(emulator, "GET", f"/jobs/{job_id}", key).json()
        while status["status"] in ("queued", "running"):
            status = call(emulator, "GET", f"/jobs/{job_id}", key).json()
        assert status["status"] == "partial"

    for method, path in [("GET", "/jobs/cloud-acme"), ("GET", "/jobs/cloud-acme/chunks"),
                         ("GET", "/jobs/cloud-acme/chunks/0/items"),
                         ("POST", "/jobs/cloud-acme/cancel"),
                         ("POST", "/jobs/cloud-acme/retry")]:  # fmt: skip
        theirs = call(emulator, method, path, "globex-key")
        assert theirs.status_code == 404, (method, path, theirs.text)

    def listed(key: str) -> set[str]:
        return {j["job_id"] for j in call(emulator, "GET", "/jobs?limit=20", key).json()}

    assert listed("acme-key") == {"cloud-acme"}
    assert listed("globex-key") == {"cloud-globex"}
    assert listed("ops-key") >= {"cloud-acme", "cloud-globex"}
    assert call(emulator, "POST", "/jobs/cloud-acme/retry", "acme-key").status_code == 202
