"""Tenant keys on the local API (issue 25 point 1): each tenant's own key, the tenant taken
from the key and not the body, and every read, list, page, stream, cancel and retry scoped to
it (another tenant's job is a 404); an operator's key sees every tenant; a shared API_KEY keeps
the one-team behaviour."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chunking.tenancy import key_digest
from tests.executor import StandInExecutor, ended, serving
from tests.support import FakeInngestApi

KEYS = {"acme-key": "acme", "globex-key": "globex", "ops-key": "*"}


@pytest.fixture
def tenants(monkeypatch: pytest.MonkeyPatch) -> None:
    from chunking.settings import get_settings

    monkeypatch.setenv("API_KEYS", json.dumps({key_digest(k): t for k, t in KEYS.items()}))
    get_settings.cache_clear()


@pytest.fixture
def executor(
    tenants: None, api: httpx.Client, fake_inngest: FakeInngestApi
) -> Iterator[StandInExecutor]:
    with serving(api, fake_inngest) as running:
        yield running


def as_(key: str) -> dict[str, str]:
    return {"x-api-key": key}


def submit(api: httpx.Client, key: str, **body: Any) -> httpx.Response:
    spec = {"total_items": 4, "chunk_size": 2, "item_delay_ms": 0, **body}
    return api.post("/jobs", json=spec, headers=as_(key))


def test_the_tenant_comes_from_the_key_not_the_body(
    api: httpx.Client, executor: StandInExecutor
) -> None:
    accepted = submit(api, "acme-key", job_id="acme-1")
    assert accepted.status_code == 202, accepted.text
    same = submit(api, "acme-key", job_id="acme-2", tenant="acme")  # naming its own: fine
    assert same.status_code == 202, same.text
    other = submit(api, "acme-key", job_id="acme-3", tenant="globex")
    assert other.status_code == 400
    assert other.json()["errors"][0]["field"] == "tenant", other.json()
    assert "acme" in other.json()["errors"][0]["message"]
    assert submit(api, "nobody-key").status_code == 401
    not_an_object = api.post("/jobs", json=[1], headers=as_("acme-key"))
    assert not_an_object.status_code == 400, not_an_object.text
    assert api.post("/jobs", json={}).status_code == 401  # no key at all
    assert api.get("/jobs/acme-1", headers=as_("ops-key")).json()["job_id"] == "acme-1"
    assert api.get("/jobs/acme-1").status_code == 401


def test_another_tenants_job_is_a_404_on_every_route(
    api: httpx.Client, executor: StandInExecutor
) -> None:
    assert submit(api, "acme-key", job_id="mine", fail_chunks=[1]).status_code == 202
    acme, globex = as_("acme-key"), as_("globex-key")
    assert ended(api, "mine", headers=acme)["status"] == "partial"
    routes = [
        ("GET", "/jobs/mine"),
        ("GET", "/jobs/mine/chunks"),
        ("GET", "/jobs/mine/chunks/0/items"),
        ("GET", "/jobs/mine/events"),
        ("POST", "/jobs/mine/cancel"),
        ("POST", "/jobs/mine/retry"),
    ]
    for method, path in routes:
        theirs = api.request(method, path, headers=globex)
        assert theirs.status_code == 404, (method, path, theirs.text)
        # The same answer as for no job at all: nothing tells the job exists.
        missing = api.request(method, path.replace("mine", "absent"), headers=globex)
        assert (missing.status_code, missing.json()["message"].replace("absent", "mine")) == (
            404, theirs.json()["message"],
        )  # fmt: skip
    # ... and the owner's retry of it works (a 202), as do its reads.
    assert api.get("/jobs/mine/chunks", headers=acme).status_code == 200
    assert api.post("/jobs/mine/retry", headers=acme).status_code == 202


def test_a_tenant_lists_only_its_own_jobs_and_an_operator_every_one(
    api: httpx.Client, executor: StandInExecutor
) -> None:
    for n in range(3):
        assert submit(api, "acme-key", job_id=f"a{n}").status_code == 202
    assert submit(api, "globex-key", job_id="g0").status_code == 202

    def listed(key: str) -> list[str]:
        return [j["job_id"] for j in api.get("/jobs?limit=10", headers=as_(key)).json()]

    assert listed("acme-key") == ["a2", "a1", "a0"]
    assert listed("globex-key") == ["g0"]
    assert sorted(listed("ops-key")) == ["a0", "a1", "a2", "g0"]
    # Another tenant's name in a limit-1 list is not a leak either: the newest of its own.
    assert [j["job_id"] for j in api.get("/jobs?limit=1", headers=as_("acme-key")).json()] == ["a2"]


def test_one_shared_key_keeps_the_one_team_behaviour(
    api: httpx.Client, fake_inngest: FakeInngestApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunking.settings import get_settings

    monkeypatch.setenv("API_KEY", "team-key")
    get_settings.cache_clear()
    with serving(api, fake_inngest):
        assert submit(api, "team-key", job_id="t1", tenant="blue").status_code == 202
        assert submit(api, "team-key", job_id="t2", tenant="green").status_code == 202
        seen = {j["job_id"] for j in api.get("/jobs", headers=as_("team-key")).json()}
        assert seen == {"t1", "t2"}  # the body's tenant is a label; the key sees every job
        assert api.get("/jobs/t1", headers=as_("wrong")).status_code == 401


def test_api_keys_must_hold_digests_not_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from chunking.settings import Settings

    monkeypatch.setenv("API_KEYS", json.dumps({"plain-key": "acme"}))
    with pytest.raises(ValidationError, match="SHA-256"):
        Settings()
