"""The emulator's worker processes: warm reuse, the kill at Timeout, crashes, cold start apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from aws.local.sqs_event_source import InvocationFailed
from aws.local.template import FunctionConfig
from aws.local.worker_process import WorkerProcess

HANDLERS = Path(__file__).parent / "handlers"


@pytest.fixture
def worker() -> WorkerProcess:
    fn = FunctionConfig("SlowFunction", HANDLERS, "slow.lambda_handler", 1.0, {})
    return WorkerProcess(fn)


def test_warm_process_is_reused_and_sees_its_remaining_time(worker: WorkerProcess) -> None:
    first = worker.invoke({}, timeout_s=1.0)
    second = worker.invoke({}, timeout_s=1.0)
    assert first["pid"] == second["pid"] == worker.pid
    assert 500 < second["remaining_ms"] <= 1000
    worker.kill()


def test_invocation_past_its_timeout_is_killed(worker: WorkerProcess) -> None:
    with pytest.raises(InvocationFailed, match=r"Task timed out after 0\.5 seconds"):
        worker.invoke({"sleep_s": 5}, timeout_s=0.5)
    assert not worker.process.is_alive()


def test_crash_is_reported_as_a_failed_invocation(worker: WorkerProcess) -> None:
    with pytest.raises(InvocationFailed, match="died"):
        worker.invoke({"crash": True}, timeout_s=5)
    assert not worker.process.is_alive()
