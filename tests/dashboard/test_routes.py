"""The dashboard's routes: the page and its files, its config, and the cloud API under /cloud
(answered as the cloud API answers, its faults named)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from aws.local.emulator import EmulatorProcess
from tests.executor import StandInExecutor
from tests.support import ServerThread, free_port, set_settings, wait_for

TERMINAL = {"succeeded", "partial", "failed", "cancelled"}


def test_the_page_and_its_files_are_served(api: httpx.Client) -> None:
    assert api.get("/", follow_redirects=False).headers["location"] == "/ui"
    page = api.get("/ui")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for ref in ("/ui/static/dashboard.js", "/ui/static/dashboard.css"):
        assert ref in page.text
        assert api.get(ref).status_code == 200
    assert api.get("/ui/static/nothing.js").status_code == 404


@pytest.mark.parametrize(
    "path", ["/", "/ui", "/ui/config", "/ui/static/dashboard.js", "/ui/static/nothing.js"]
)
def test_no_other_site_may_frame_the_dashboard(api: httpx.Client, path: str) -> None:
    """Framed by another site, the page's buttons could be clicked through a decoy (clickjacking):
    every answer under /ui says no frame may hold it, in CSP and in the older header."""
    answer = api.get(path, follow_redirects=False)
    assert answer.headers.get("content-security-policy") == "frame-ancestors 'none'"
    assert answer.headers.get("x-frame-options") == "DENY"


def test_the_scripts_are_es_modules_served_as_javascript_and_all_imported(
    api: httpx.Client,
) -> None:
    """A browser refuses a module served under any other MIME type, and resolves each import
    against the importing module's URL: every import must be found under /ui/static/."""
    page = api.get("/ui").text
    assert '<script type="module" src="/ui/static/dashboard.js">' in page
    seen: set[str] = set()
    todo = ["/ui/static/dashboard.js"]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        module = api.get(url)
        assert module.status_code == 200, url
        mime = module.headers["content-type"].split(";")[0].strip()
        assert mime in ("text/javascript", "application/javascript"), (url, mime)
        for ref in re.findall(r'^import .* from "([^"]+)";$', module.text, re.M):
            assert ref.startswith("./"), (url, ref)  # relative: no host, no bundler
            todo.append(urljoin(url, ref))
    static = Path(__file__).resolve().parents[2] / "dashboard" / "static"
    assert seen == {f"/ui/static/{f.name}" for f in static.glob("*.js")}  # none left unused


def test_config_says_whether_a_key_is_needed_and_whether_the_cloud_is_there(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_settings(monkeypatch, API_KEY=None, AWS_START_URL="http://127.0.0.1:1/Prod/start")
    assert api.get("/ui/config").json() == {
        "api_key_required": False, "cloud": {"configured": True, "reason": None},
    }  # fmt: skip
    set_settings(monkeypatch, API_KEY="k3y", AWS_START_URL="")
    assert api.get("/ui/config").json() == {
        "api_key_required": True,
        "cloud": {"configured": False, "reason": "AWS_START_URL is not set"},
    }


def test_a_cloud_job_is_started_listed_read_and_paged_through_the_app(
    api: httpx.Client, cloud: EmulatorProcess
) -> None:
    started = api.post("/cloud/jobs", json={"total_items": 12, "chunk_size": 4})
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    assert job_id in [job["job_id"] for job in api.get("/cloud/jobs").json()]

    def ended() -> bool:
        return api.get(f"/cloud/jobs/{job_id}").json()["status"] in TERMINAL

    wait_for(ended, timeout=60)
    status = api.get(f"/cloud/jobs/{job_id}").json()
    assert (status["path"], status["status"], status["chunks_succeeded"]) == (
        "cloud", "succeeded", 3,
    )  # fmt: skip
    page = api.get(f"/cloud/jobs/{job_id}/chunks", params={"limit": 2}).json()
    assert [c["index"] for c in page["chunks"]] == [0, 1] and page["next_after"] == 1
    # The cloud API's own answers to bad requests come through as they are.
    cancelled = api.post(f"/cloud/jobs/{job_id}/cancel")
    assert cancelled.status_code == 409 and "ended" in cancelled.json()["message"]
    assert api.get("/cloud/jobs/no-such-job").status_code == 404
    bad = api.get(f"/cloud/jobs/{job_id}/chunks", params={"limit": 0})
    assert bad.status_code == 400 and "limit" in bad.json()["message"]
    bad = api.post("/cloud/jobs", json={"total_items": -1})
    assert bad.status_code == 400 and "total_items" in bad.json()["message"]
    # A chunk's answers (a simulate job has none), and the cloud API's 400 and 404 for them.
    items = api.get(f"/cloud/jobs/{job_id}/chunks/2/items", params={"limit": 5})
    assert items.status_code == 200, items.text
    assert items.json() == {"job_id": job_id, "chunk_index": 2, "items": [], "next_after": None}
    assert api.get(f"/cloud/jobs/{job_id}/chunks/3/items").status_code == 404
    bad = api.get(f"/cloud/jobs/{job_id}/chunks/0/items", params={"after": "x"})
    assert bad.status_code == 400 and "after" in bad.json()["message"]


def test_what_the_app_refuses_before_calling_the_cloud(
    api: httpx.Client, cloud: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_id = api.get("/cloud/jobs/has%20space")
    assert bad_id.status_code == 400 and "job_id" in bad_id.json()["message"]
    form = api.post("/cloud/jobs", content=b"total_items=5", headers={"content-type": "text/plain"})
    assert form.status_code == 415
    cross_site = api.post("/cloud/jobs", json={}, headers={"sec-fetch-site": "cross-site"})
    assert cross_site.status_code == 403
    assert api.post("/cloud/jobs", content=b"x" * (2**20 + 1)).status_code == 413
    set_settings(monkeypatch, API_KEY="k3y")
    assert api.get("/cloud/jobs").status_code == 401
    assert api.get("/cloud/jobs", headers={"x-api-key": "k3y"}).status_code == 200


@pytest.mark.parametrize(
    ("env", "code", "says"),
    [
        ({"AWS_START_URL": ""}, 503, "AWS_START_URL"),
        ({"CLOUD_API_KEY": "wrong"}, 502, "CLOUD_API_KEY"),
        ({"AWS_START_URL": "http://127.0.0.1:{port}/Prod/start"}, 502, "did not answer"),
    ],
)
def test_a_cloud_that_cannot_be_used_is_named(
    api: httpx.Client,
    cloud: EmulatorProcess,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    code: int,
    says: str,
) -> None:
    set_settings(monkeypatch, **{k: v.format(port=free_port()) for k, v in env.items()})
    for answer in (api.get("/cloud/jobs"), api.post("/cloud/jobs", json={"total_items": 5})):
        assert answer.status_code == code and says in answer.json()["message"]
        assert "127.0.0.1" not in answer.text  # where the cloud API is stays in the log


def test_the_stand_in_executor_runs_a_local_job_with_its_retries(
    api: httpx.Client, executor: StandInExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the browser test relies on: a job started on the local path runs to its end."""
    set_settings(monkeypatch, RETRY_BACKOFF_BASE_S="0.2")
    spec: dict[str, Any] = {"total_items": 20, "chunk_size": 5, "item_delay_ms": 0,
                            "flaky_chunks": {"1": 1}, "fail_chunks": [3]}  # fmt: skip
    job_id = api.post("/jobs", json=spec).json()["job_id"]
    deadline = time.monotonic() + 30
    while (status := api.get(f"/jobs/{job_id}").json())["status"] not in TERMINAL:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert (status["status"], status["chunks_succeeded"], status["chunks_failed"]) == (
        "partial", 3, 1,
    )  # fmt: skip
    assert status["retries"] == 1 and not executor.errors


def test_retry_is_forwarded_to_the_cloud_apis_retry_and_its_answer_comes_back(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in for the cloud API (its retry route may be newer than the emulator here):
    the proxy POSTs to {base}/jobs/{id}/retry with the stack's key, and answers as it did."""
    seen: list[tuple[str, str, str | None]] = []
    stand_in = FastAPI()

    @stand_in.post("/Prod/jobs/{job_id}/retry")
    async def retry(job_id: str, request: Request) -> JSONResponse:
        seen.append((request.method, job_id, request.headers.get("x-api-key")))
        if job_id == "done-job":
            return JSONResponse({"message": "job done-job succeeded: nothing to retry"}, 409)
        return JSONResponse({"job_id": job_id, "status": "running", "redrives": 1}, 202)

    server = ServerThread(stand_in).start()
    try:
        set_settings(monkeypatch, AWS_START_URL=f"{server.url}/Prod/start", CLOUD_API_KEY="ck")
        again = api.post("/cloud/jobs/part-job/retry")
        assert again.status_code == 202 and again.json()["redrives"] == 1
        refused = api.post("/cloud/jobs/done-job/retry")
        assert refused.status_code == 409 and "nothing to retry" in refused.json()["message"]
        assert seen == [("POST", "part-job", "ck"), ("POST", "done-job", "ck")]
        assert api.post("/cloud/jobs/has%20space/retry").status_code == 400
    finally:
        server.stop()
