"""A function's 'Lambda containers' for the emulator: worker processes, kept warm and reused.

Each process imports the handler once (the cold start), then serves invocations; one that runs
past the function's Timeout, or dies, is killed and replaced by a cold one, as on Lambda.

Modelled as Lambda does it: an invocation goes to an idle warm process, else to a new one
(a cold start); the init phase has its own 10 s limit, apart from the Timeout, and an init
past it is run again within the invocation, under the function's Timeout, whose remaining
time is what the handler then gets. An init that fails (the import raises, the process dies)
fails the invocation: the event source's records come back after their visibility timeout.
A record is sent to a process only once its init has said it is ready.

What differs, and why: Lambda inits its environments side by side on its own hardware, but
here every cold start of every function shares this machine's cores. So at most one init per
core runs at once (`COLD_STARTS`), and an init's 10 s begin only when it gets its place. An
invocation waiting for a place takes a warm process that frees up meanwhile, as Lambda would
have, had that process been free when the batch came. Not modelled: provisioned concurrency,
SnapStart, memory, and the recycling of idle environments.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from aws.local.lambda_events import lambda_context
from aws.local.sqs_event_source import InvocationFailed
from aws.local.template import REPO, FunctionConfig

INIT_TIMEOUT_S = 10  # Lambda's limit for a function's init phase, apart from its Timeout


def machine_cores() -> int:
    """The cores this process may run on (what a cold start competes for)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Shared by every function's processes in this emulator: their cold starts share the cores.
COLD_STARTS = threading.BoundedSemaphore(machine_cores())


class InitTimedOut(InvocationFailed):
    """The init phase did not say it was ready within its limit (the process is killed)."""


def _serve_invocations(
    conn: Connection, code_dir: str, handler: str, environment: dict[str, str]
) -> None:
    """A worker process: import the handler once (cold start), then serve invocations."""
    os.environ.update(environment)
    # Like Lambda: the function's code first, then the layer (the repo root holds chunking/).
    sys.path[:0] = [code_dir, str(REPO)]
    module_name, function_name = handler.rsplit(".", 1)
    function = getattr(importlib.import_module(module_name), function_name)
    conn.send(("ready", None))
    while True:
        try:
            event, timeout_s = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", function(event, lambda_context(timeout_s))))
        except Exception as err:  # the invocation failed, as Lambda would report it
            conn.send(("error", f"{type(err).__name__}: {err}"))


class WorkerProcess:
    """One warm 'Lambda container' for a function.

    As on Lambda, the cold start (interpreter and imports) is its own phase with its own limit:
    it does not count against the invocation's Timeout.
    """

    def __init__(self, fn: FunctionConfig, init_timeout_s: float = INIT_TIMEOUT_S) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve_invocations,
            args=(child, str(fn.code_dir), fn.handler, fn.environment),
            daemon=True,
        )
        self.process.start()
        child.close()
        if not self.conn.poll(init_timeout_s):
            self.kill()
            raise InitTimedOut(f"init of {fn.logical_id} took over {init_timeout_s:g}s")
        try:
            if self.conn.recv()[0] == "ready":
                return
        except EOFError:
            pass
        self.kill()
        raise InvocationFailed(f"init of {fn.logical_id} failed")

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def invoke(self, event: dict[str, Any], timeout_s: float) -> Any:
        self.conn.send((event, timeout_s))
        if not self.conn.poll(timeout_s):
            self.kill()
            raise InvocationFailed(f"Task timed out after {timeout_s:g} seconds")
        try:
            status, value = self.conn.recv()
        except (EOFError, ConnectionResetError) as err:
            self.kill()
            raise InvocationFailed(f"worker process {self.pid} died") from err
        if status == "error":
            raise InvocationFailed(value)
        return value

    def kill(self) -> None:
        if self.process.is_alive() and self.process.pid:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(timeout=5)


@dataclass
class ColdStartStats:
    cold_starts: int = 0  # processes whose init ended ready
    init_retries: int = 0  # inits past INIT_TIMEOUT_S, run again under the function's Timeout
    init_failures: int = 0  # inits that failed: their invocation failed
    initing_now: int = 0
    max_initing: int = 0  # the most inits at once: at most the gate's places
    took_freed_warm: int = 0  # invocations that waited for a place and got a freed warm process


class WarmWorkers:
    """A function's worker processes, called as its Lambda handler by an SQS event source.

    Each invocation takes an idle process, or starts one (a cold start) once `cold_start_gate`
    gives it a place, whichever comes first; a context cannot cross into the process, which
    counts down from the function's Timeout on its own.
    """

    def __init__(
        self,
        fn: FunctionConfig,
        cold_start_gate: threading.Semaphore = COLD_STARTS,
        init_timeout_s: float = INIT_TIMEOUT_S,
    ) -> None:
        self.fn = fn
        self.stats = ColdStartStats()
        self._gate, self._init_timeout_s = cold_start_gate, init_timeout_s
        self._idle: list[WorkerProcess] = []
        self._in_flight: dict[int, int] = {}  # worker pid -> records
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        worker, timeout_s = self._take_process()
        pid = worker.pid or 0
        with self._lock:
            self._in_flight[pid] = len(event.get("Records", []))
        try:
            return worker.invoke(event, timeout_s)
        finally:
            with self._freed:
                self._in_flight.pop(pid, None)
                if worker.process.is_alive():
                    self._idle.append(worker)
                    self._freed.notify()

    def _take_process(self) -> tuple[WorkerProcess, float]:
        """An idle process, or a cold one once the gate gives a place: whichever comes first.
        Returns it with the time its invocation has (less what a retried init took)."""
        waited = False
        with self._freed:
            while True:
                if self._idle:
                    if waited:
                        self.stats.took_freed_warm += 1
                    return self._idle.pop(), self.fn.timeout_s
                if self._gate.acquire(blocking=False):
                    break
                waited = True
                # Another function's cold start may end and free a place: no notify for that.
                self._freed.wait(0.05)
        try:
            return self._cold_start()
        finally:
            self._gate.release()

    def _cold_start(self) -> tuple[WorkerProcess, float]:
        with self._lock:
            self.stats.initing_now += 1
            self.stats.max_initing = max(self.stats.max_initing, self.stats.initing_now)
        try:
            try:
                worker, timeout_s = WorkerProcess(self.fn, self._init_timeout_s), self.fn.timeout_s
            except InitTimedOut:
                with self._lock:
                    self.stats.init_retries += 1
                # As Lambda: the init again, within the invocation and its Timeout.
                began = time.monotonic()
                worker = WorkerProcess(self.fn, self.fn.timeout_s)
                timeout_s = self.fn.timeout_s - (time.monotonic() - began)
        except InvocationFailed:
            with self._lock:
                self.stats.init_failures += 1
            raise
        finally:
            with self._lock:
                self.stats.initing_now -= 1
        with self._lock:
            self.stats.cold_starts += 1
        return worker, timeout_s

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "in_flight": dict(self._in_flight),
                "idle_workers": [w.pid for w in self._idle],
                **replace(self.stats).__dict__,
            }

    def close(self) -> None:
        with self._lock:
            for worker in self._idle:
                worker.kill()
