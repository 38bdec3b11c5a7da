"""Tenant keys on the local API (issue 25 point 1): each tenant's own key, the tenant taken
from the key and not the body, and every read, list, page, stream, cancel and retry scoped to
it (another tenant's job is a 404); an operator's key sees every tenant; a shared API_KEY keeps
the one-team behaviour."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunking.tenancy import key_digest
from tests.executor import StandInExecutor, ended, serving
from tests.functions.test_input_uploads import upload
from tests.llm_server import FakeModelServer
from tests.support import FakeInngestApi

KEYS = {"acme-key": "acme", "globex-key": "globex", "ops-key": "*"}


@pytest.fixture
def tenants(monkeypatch: pytest.MonkeyPatch) -> None:
    from chunking.settings import get_settings

    monkeypatch.setenv("API_KEYS", json.dumps({key_digest(k): t for k, t in KEYS.items()}))
    get_settings.cache_clear()


@pytest.fixture
def executor(tenants: None, executor: StandInExecutor) -> StandInExecutor:
    """The stand-in executor, once the tenant keys are set."""
    return executor


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


ITEMS = [{"id": "x1", "prompt": "one"}, {"id": "x2", "prompt": "two"}]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def llm(api: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return api.post("/jobs", json={"workload": "llm", **body}, headers=as_(key))


def refused_input(response: httpx.Response) -> str:
    """The 400's message about input_uri (the test fails on any other answer)."""
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["field"] == "input_uri", error
    message: str = error["message"]
    return message


def test_a_tenants_llm_job_reads_only_its_own_folder(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer, isolated_store: Path
) -> None:
    uploads = isolated_store.parent / "uploads"
    acme_uri = upload(api, jsonl(ITEMS), as_("acme-key"))
    assert acme_uri == str(uploads / "acme" / f"{hashlib.sha256(jsonl(ITEMS)).hexdigest()}.jsonl")
    mine = llm(api, "acme-key", input_uri=acme_uri)
    assert mine.status_code == 202, mine.text
    assert ended(api, mine.json()["job_id"], headers=as_("acme-key"))["status"] == "succeeded"

    sha = Path(acme_uri).name
    (uploads / "globex").mkdir(parents=True, exist_ok=True)
    (uploads / "globex" / "link.jsonl").symlink_to(acme_uri)  # as if one got there somehow
    missing = str(uploads / "acme" / f"{'0' * 64}.jsonl")
    tries = [acme_uri, f"{uploads}/globex/../acme/{sha}", f"{uploads}//acme/{sha}",
             str(uploads / "globex" / "link.jsonl"), str(uploads / "acme2" / sha),
             str(isolated_store.parent / sha), "s3://bucket/inputs/globex/x.jsonl",
             missing]  # fmt: skip
    messages = {refused_input(llm(api, "globex-key", input_uri=uri)) for uri in tries}
    # One message whatever was named, there or not: it says where and how, and tells nothing.
    assert len(messages) == 1, messages
    (message,) = messages
    assert f"{uploads / 'globex'}/" in message and "POST /inputs" in message, message
    # Nothing was recorded for globex.
    assert [j["job_id"] for j in api.get("/jobs", headers=as_("globex-key")).json()] == []

    theirs = upload(api, jsonl(ITEMS[:1]), as_("globex-key"))
    own = llm(api, "globex-key", input_uri=theirs)
    assert own.status_code == 202, own.text
    given = llm(api, "globex-key", items=ITEMS)  # items: kept by the workload, not named
    assert given.status_code == 202, given.text
    for job in (own, given):
        assert ended(api, job.json()["job_id"], headers=as_("globex-key"))["status"] == "succeeded"
    # The operator acts for any tenant: any input under the root.
    assert llm(api, "ops-key", input_uri=acme_uri).status_code == 202


def test_a_shared_key_may_name_any_input_under_the_root(
    api: httpx.Client, fake_inngest: FakeInngestApi, model: FakeModelServer,
    isolated_store: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from chunking.settings import get_settings

    monkeypatch.setenv("API_KEY", "team-key")
    get_settings.cache_clear()
    anywhere = isolated_store.parent / "elsewhere" / "in.jsonl"
    anywhere.parent.mkdir()
    anywhere.write_bytes(jsonl(ITEMS))
    with serving(api, fake_inngest):
        accepted = llm(api, "team-key", input_uri=str(anywhere), tenant="blue")
        assert accepted.status_code == 202, accepted.text
        assert ended(api, accepted.json()["job_id"], headers=as_("team-key"))["status"] == (
            "succeeded"
        )
