"""The emulator's worker processes: warm reuse, the kill at Timeout, crashes, cold start apart;
cold starts at most a gate's places at once, an init past its limit run again within the
Timeout (as Lambda does), a failed init failing its invocation."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from aws.local.sqs_event_source import InvocationFailed
from aws.local.template import FunctionConfig
from aws.local.worker_process import WarmWorkers, WorkerProcess

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


def slow_init(timeout_s: float = 10, **environment: str) -> FunctionConfig:
    return FunctionConfig("SlowInit", HANDLERS, "slow_init.lambda_handler", timeout_s, environment)


def invoke_together(workers: WarmWorkers, events: list[dict[str, Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(events)) as pool:
        return list(pool.map(lambda event: workers(event, None), events))


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(began, 1) for began, _ in intervals] + [(ended, -1) for _, ended in intervals])
    at_once = most = 0
    for _, step in edges:  # an end sorts before a begin at the same instant
        at_once += step
        most = max(most, at_once)
    return most


def test_cold_starts_take_turns_at_the_gate(tmp_path: Path) -> None:
    log = tmp_path / "inits"
    workers = WarmWorkers(
        slow_init(INIT_SLEEP_S="0.5", INIT_LOG=str(log)), cold_start_gate=threading.Semaphore(2)
    )
    try:
        # Five invocations at once, none free to start with: the first two take the gate's
        # places, the others wait for a place or for a process to free up, whichever first.
        results = invoke_together(workers, [{"sleep_s": 3}] * 5)
    finally:
        workers.close()
    assert len(results) == 5
    assert workers.stats.cold_starts + workers.stats.took_freed_warm == 5
    inits = [
        (float(began), float(ended))
        for began, ended in map(str.split, log.read_text().splitlines())
    ]
    assert len(inits) == workers.stats.cold_starts
    assert most_at_once(inits) <= 2  # the processes' own record: never three inits at once
    assert workers.stats.max_initing == 2
    assert workers.stats.init_failures == workers.stats.init_retries == 0


def test_an_invocation_waiting_for_the_gate_takes_a_warm_process_freed_meanwhile() -> None:
    gate = threading.Semaphore(1)
    workers = WarmWorkers(slow_init(), cold_start_gate=gate)
    try:
        [first] = invoke_together(workers, [{}])
        assert gate.acquire(blocking=False)  # another function's cold start holds the place
        results = invoke_together(workers, [{"sleep_s": 0.2}] * 3)
        gate.release()
    finally:
        workers.close()
    assert {r["pid"] for r in results} == {first["pid"]}  # all three on the one warm process
    assert workers.stats.cold_starts == 1
    assert workers.stats.took_freed_warm >= 1


def test_an_init_past_its_limit_is_run_again_within_the_timeout() -> None:
    gate = threading.Semaphore(1)
    workers = WarmWorkers(
        slow_init(timeout_s=10, INIT_SLEEP_S="1.5"), cold_start_gate=gate, init_timeout_s=0.5
    )
    try:
        [result] = invoke_together(workers, [{}])
    finally:
        workers.close()
    assert (workers.stats.init_retries, workers.stats.cold_starts) == (1, 1)
    assert result["remaining_ms"] <= 8500  # the retried init's 1.5 s came off the Timeout
    assert gate.acquire(blocking=False)  # its place was given back


def test_an_init_that_fails_fails_its_invocation_and_gives_its_place_back() -> None:
    gate = threading.Semaphore(1)
    fn = FunctionConfig("BrokenInit", HANDLERS, "broken_init.lambda_handler", 10, {})
    workers = WarmWorkers(fn, cold_start_gate=gate)
    with pytest.raises(InvocationFailed, match="init of BrokenInit failed"):
        workers({}, None)
    assert (workers.stats.init_failures, workers.stats.cold_starts) == (1, 0)
    assert gate.acquire(blocking=False)
