"""Test helpers: a real HTTP server in a thread, and local stand-ins for servers we can't run.

The Inngest Dev Server binary cannot be downloaded here, so `FakeInngestApi` stands in for
its event API (`POST /e/{key}`) and registration endpoint (`POST /fn/register`), answering as
they do. The real SDK talks to it over HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import inngest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from inngest._internal.net import sign_request
from inngest.experimental import mocked


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """Runs an ASGI app with uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class FakeInngestApi:
    """Stand-in for the Dev Server's event API and registration endpoint."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.registrations: list[dict[str, Any]] = []
        self.fail_sends = False
        self.posts = 0  # requests to the event API (a batch of events is one)
        # Refuses a whole request (400), as Inngest does, when one of its events matches.
        self.refuse: Callable[[dict[str, Any]], bool] | None = None
        self.on_events: Callable[[list[dict[str, Any]]], None] | None = None  # new ones, as sent
        self.app = FastAPI()

        @self.app.post("/e/{event_key}")
        async def receive_events(event_key: str, request: Request) -> JSONResponse:
            if self.fail_sends:
                return JSONResponse({"error": "event API unavailable"}, status_code=503)
            self.posts += 1
            body = await request.json()
            batch = body if isinstance(body, list) else [body]
            if self.refuse and any(self.refuse(e) for e in batch):
                return JSONResponse({"error": "event refused"}, status_code=400)
            ids = [e.get("id") or f"evt-{len(self.events)}-{i}" for i, e in enumerate(batch)]
            # As Inngest does: an event whose id it has seen (in 24 h) is accepted and dropped.
            seen = {e.get("id") for e in self.events if e.get("id")}
            new = [e for e in batch if not e.get("id") or e["id"] not in seen]
            self.events.extend(new)
            if self.on_events:
                self.on_events(new)
            return JSONResponse({"ids": ids, "status": 200})

        @self.app.post("/fn/register")
        async def register(request: Request) -> JSONResponse:
            self.registrations.append(await request.json())
            return JSONResponse({"ok": True, "modified": True})

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["name"] == name]

    def reset(self) -> None:
        self.events.clear()
        self.registrations.clear()
        self.fail_sends = False
        self.posts = 0
        self.refuse = None
        self.on_events = None


MOCK_CLIENT = mocked.Inngest(app_id="test")


def trigger(fn: inngest.Function[Any], name: str, data: dict[str, Any]) -> Any:
    """Run a function to completion in the SDK's in-process executor."""
    return mocked.trigger(fn, inngest.Event(name=name, data=data), MOCK_CLIENT)


def replay(fn: inngest.Function[Any], event: dict[str, Any]) -> Any:
    """Deliver an event captured by FakeInngestApi to a function, as Inngest would."""
    return trigger(fn, event["name"], event.get("data", {}))


def run_finishes(api: FakeInngestApi) -> list[Any]:
    """Deliver the demo/finish_job events sent so far to the finish-job function."""
    from functions.events import FINISH_JOB
    from functions.finish_job import finish_job

    return [replay(finish_job, e) for e in api.named(FINISH_JOB)]


def spy_run_errors(fn: inngest.Function[Any], monkeypatch: Any) -> list[BaseException]:
    """The errors a function's runs raise, in order (the executor retries them, as Inngest)."""
    errors: list[BaseException] = []
    real_call = fn.call

    async def spy(*args: Any, **kwargs: Any) -> Any:
        result = await real_call(*args, **kwargs)
        if result.error is not None:
            errors.append(result.error)
        return result

    monkeypatch.setattr(fn, "call", spy)
    return errors


def set_settings(monkeypatch: Any, **env: str | None) -> None:
    """Set (or, given None, unset) environment variables and read the settings afresh."""
    from chunking.settings import get_settings

    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def drive_over_http(
    serve_url: str,
    fn_id: str,
    event: dict[str, Any],
    attempt: int = 0,
    max_calls: int = 20,
    signing_key: str | None = None,
    run_id: str = "run-1",
    timeout_s: float = 30,
) -> Any:
    """Call a function through its serve endpoint the way the Inngest executor does.

    Each 206 answer carries the steps that ran; their outputs are memoized and the function is
    called again, until it answers 200 (done) or an error status. Returns the last response.
    With `signing_key`, each request is signed as Inngest signs it (production mode). Each
    request may take `timeout_s` (the executor waits as long as a step may run).
    """
    return drive_counting_calls(
        serve_url, fn_id, event, attempt, max_calls, signing_key, run_id, timeout_s
    )[0]


def drive_counting_calls(
    serve_url: str,
    fn_id: str,
    event: dict[str, Any],
    attempt: int = 0,
    max_calls: int = 20,
    signing_key: str | None = None,
    run_id: str = "run-1",
    timeout_s: float = 30,
) -> tuple[Any, int]:
    """drive_over_http, and how many calls the executor made to the app."""
    steps: dict[str, Any] = {}
    stack: list[str] = []
    for calls in range(1, max_calls + 1):
        body = {
            "ctx": {"attempt": attempt, "disable_immediate_execution": False, "run_id": run_id,
                    "stack": {"stack": stack}},
            "event": event, "events": [event], "steps": steps, "use_api": False,
        }  # fmt: skip
        content = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if signing_key:
            headers["x-inngest-signature"] = str(sign_request(content, signing_key))
        response = httpx.post(
            serve_url, params={"fnId": fn_id, "stepId": "step"}, content=content,
            headers=headers, timeout=timeout_s,
        )  # fmt: skip
        if response.status_code != 206:
            return response, calls
        for op in response.json():
            if op.get("op") == "Sleep":  # a durable sleep: the executor calls again after it
                until = datetime.fromisoformat(op["name"].replace("Z", "+00:00"))
                time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()))
            steps[op["id"]] = {"data": op.get("data")}
            stack.append(op["id"])
    raise AssertionError(f"{fn_id} did not finish in {max_calls} calls")


class AppProcess:
    """The real app in its own process, in production mode (INNGEST_DEV=0) with a signing key,
    its registrations going to `inngest_url`; its log (stderr) is kept for the test to read."""

    SERVE_ORIGIN = "https://jobs.example.com"

    def __init__(
        self,
        tmp_path: Path,
        signing_key: str,
        inngest_url: str | None = None,
        workers: int = 1,
        root_path: str | None = None,
        **env: str,
    ) -> None:
        self.workers = workers
        # Behind a proxy that strips this prefix: uvicorn --root-path (requests come without it).
        self.root_path = root_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"app-{self.port}.log"
        self.env = {
            **os.environ,
            "INNGEST_DEV": "0",
            "INNGEST_SIGNING_KEY": signing_key,
            "INNGEST_SERVE_ORIGIN": self.SERVE_ORIGIN,
            "JOB_STORE_URL": f"sqlite:///{tmp_path / f'prod-{self.port}.sqlite3'}",
            **({"INNGEST_BASE_URL": inngest_url} if inngest_url else {}),
            **env,
        }

    def __enter__(self) -> AppProcess:
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "main:app", "--port", str(self.port),
             "--log-level", "warning", "--workers", str(self.workers),
             *(["--root-path", self.root_path] if self.root_path else [])],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited: {self.log_path.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=30)
        return self

    def logged(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def __exit__(self, *_: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def longjobs_process(*args: str) -> subprocess.Popen[str]:
    """`longjobs ARGS` as a terminal starts it, its output piped: Ctrl-C (SIGINT) raises
    KeyboardInterrupt in it even when this process ignores SIGINT, as pytest-xdist's workers
    do (a child inherits an ignored signal, and Python then installs no handler of its own)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=Path(__file__).parents[1],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
