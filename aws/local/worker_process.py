"""A function's 'Lambda containers' for the emulator: worker processes, kept warm and reused.

Each process imports the handler once (the cold start), then serves invocations; one that runs
past the function's Timeout, or dies, is killed and replaced by a cold one, as on Lambda.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from aws.local.lambda_events import lambda_context
from aws.local.sqs_event_source import InvocationFailed
from aws.local.template import REPO, FunctionConfig

INIT_TIMEOUT_S = 10  # Lambda's limit for a function's init phase, apart from its Timeout


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

    def __init__(self, fn: FunctionConfig) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve_invocations,
            args=(child, str(fn.code_dir), fn.handler, fn.environment),
            daemon=True,
        )
        self.process.start()
        child.close()
        ready = self.conn.poll(INIT_TIMEOUT_S)
        try:
            if ready and self.conn.recv()[0] == "ready":
                return
        except EOFError:
            pass
        self.kill()
        raise InvocationFailed(f"init of {fn.logical_id} failed or took over {INIT_TIMEOUT_S}s")

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


class WarmWorkers:
    """A function's worker processes, called as its Lambda handler by an SQS event source.

    Each invocation takes an idle process, or starts one (a cold start); a context cannot cross
    into the process, which counts down from the function's Timeout on its own.
    """

    def __init__(self, fn: FunctionConfig) -> None:
        self.fn = fn
        self._idle: list[WorkerProcess] = []
        self._in_flight: dict[int, int] = {}  # worker pid -> records
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        worker = worker or WorkerProcess(self.fn)
        pid = worker.pid or 0
        with self._lock:
            self._in_flight[pid] = len(event.get("Records", []))
        try:
            return worker.invoke(event, self.fn.timeout_s)
        finally:
            with self._lock:
                self._in_flight.pop(pid, None)
                if worker.process.is_alive():
                    self._idle.append(worker)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"in_flight": dict(self._in_flight), "idle_workers": [w.pid for w in self._idle]}

    def close(self) -> None:
        with self._lock:
            for worker in self._idle:
                worker.kill()
