"""A workload added from the tests folder alone runs on both paths: its own field validated
(a bad value a 400 naming it, on both APIs), its own chunk work done, the job `succeeded`.

Nothing outside `tests/` names it: the local app learns it by import (as WORKLOAD_MODULES
does), the emulated cloud stack by its `WorkloadModules` parameter (WORKLOAD_MODULES in the
functions' environment, as a deployed stack would set it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aws.local.emulator import EmulatorProcess
from tests.executor import StandInExecutor

# 60 items in chunks of 10 with stride 3: chunks 0 and 3 fail once, then succeed.
SPEC = {"workload": "stride", "stride": 3, "total_items": 60, "chunk_size": 10}
CLOUD_KEY = "stride-test-key"


@pytest.fixture
def executor(stride_workload: None, executor: StandInExecutor) -> StandInExecutor:
    """The stand-in executor, once the stride workload is registered."""
    return executor


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(
        "--parameter", "WorkloadModules=tests.plugins.stride", api_key=CLOUD_KEY
    ) as process:
        yield process


def wait_until_ended(read: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status: dict[str, Any] = read()
        if status["status"] not in ("queued", "running"):
            return status
        time.sleep(0.3)
    raise AssertionError(f"the job did not end: {status}")


def assert_ran_its_own_work(status: dict[str, Any]) -> None:
    assert status["status"] == "succeeded", status
    assert (status["total_chunks"], status["chunks_succeeded"]) == (6, 6)
    assert (status["items_processed"], status["retries"]) == (60, 2)  # chunks 0 and 3, once


def test_a_third_workload_runs_on_the_local_path(
    api: httpx.Client, executor: StandInExecutor
) -> None:
    bad = api.post("/jobs", json={**SPEC, "stride": 0})
    assert bad.status_code == 400
    assert [e["field"] for e in bad.json()["errors"]] == ["stride"]
    foreign = api.post("/jobs", json={**SPEC, "fail_chunks": [1]})
    assert foreign.status_code == 400
    assert "applies to the simulate workload only" in foreign.json()["errors"][0]["message"]
    started = api.post("/jobs", json=SPEC)
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    assert_ran_its_own_work(wait_until_ended(lambda: api.get(f"/jobs/{job_id}").json()))
    # The API publishes its field beside the others' (what the dashboard's form is built from).
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["JobSpec"]["discriminator"]["mapping"]["stride"].endswith("/StrideFields")
    assert schemas["StrideFields"]["properties"]["stride"]["minimum"] == 1


def test_a_third_workload_runs_on_the_cloud_path(emulator: EmulatorProcess) -> None:
    with httpx.Client(base_url=f"{emulator.api}/Prod", headers={"x-api-key": CLOUD_KEY}) as api:
        bad = api.post("/start", json={**SPEC, "stride": 0})
        assert bad.status_code == 400
        assert [e["field"] for e in bad.json()["errors"]] == ["stride"]
        started = api.post("/start", json=SPEC)
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        assert_ran_its_own_work(wait_until_ended(lambda: api.get(f"/jobs/{job_id}").json()))
