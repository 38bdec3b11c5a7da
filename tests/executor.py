"""A stand-in for the Inngest executor, for tests that run the local path end to end where no
Dev Server can be installed (the browser test): every event the app sends starts a run of each
function it triggers, called through the app's serve endpoint on the SDK's own HTTP protocol
(`drive_over_http`: steps memoized, the function called again until it answers).

Like the executor, it retries a run that answers 500 unless the answer says
`x-inngest-no-retry: true`, waiting until its `retry-after` when it gives one (our backoff),
up to the function's `retries`; it runs at most `workers` calls at a time. Not modelled:
concurrency keys, priority, `cancel` (the chunks read the cancel from the store themselves),
the failure handlers (no `inngest/function.failed` is sent), cron functions (the sweep), and
the executor's own backoff (each retry here waits what the answer asks, else 0.5 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
import inngest

from tests.support import FakeInngestApi, drive_over_http

INNGEST_DEFAULT_RETRIES = 3  # a function that sets none is retried 3 times


class StandInExecutor:
    def __init__(
        self,
        events: FakeInngestApi,
        serve_url: str,
        functions: list[inngest.Function[Any]],
        workers: int = 4,
        request_timeout_s: float = 30,
    ) -> None:
        self.serve_url, self.request_timeout_s = serve_url, request_timeout_s
        self.triggers: dict[str, list[tuple[str, int]]] = {}
        for fn in functions:
            retries = fn._opts.retries
            for trigger in fn._triggers:
                event = getattr(trigger, "event", None)
                if event:
                    self.triggers.setdefault(event, []).append(
                        (fn._opts.fully_qualified_id,
                         INNGEST_DEFAULT_RETRIES if retries is None else retries)
                    )  # fmt: skip
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="executor")
        self.runs: list[tuple[str, str, int, int]] = []  # fn, event name, attempt, status
        self.errors: list[BaseException] = []
        self.closed = threading.Event()
        events.on_events = self.received

    def received(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            for fn_id, retries in self.triggers.get(event["name"], []):
                self.pool.submit(self.run, fn_id, retries, event, 0)

    def run(self, fn_id: str, retries: int, event: dict[str, Any], attempt: int) -> None:
        if self.closed.is_set():
            return
        try:
            response = drive_over_http(
                self.serve_url,
                fn_id,
                event,
                attempt=attempt,
                max_calls=50,
                timeout_s=self.request_timeout_s,
            )
        except BaseException as err:  # an app that does not answer: kept for the test to see
            self.errors.append(err)
            return
        self.runs.append((fn_id, event["name"], attempt, response.status_code))
        if response.status_code < 500 or attempt >= retries:
            return
        if response.headers.get("x-inngest-no-retry") == "true":
            return
        wait_s = 0.5
        if retry_after := response.headers.get("retry-after"):
            wait_s = max(0.0, datetime.fromisoformat(retry_after).timestamp() - time.time())
        timer = threading.Timer(wait_s, self.resubmit, (fn_id, retries, event, attempt + 1))
        timer.daemon = True
        timer.start()

    def resubmit(self, fn_id: str, retries: int, event: dict[str, Any], attempt: int) -> None:
        if not self.closed.is_set():
            self.pool.submit(self.run, fn_id, retries, event, attempt)

    def close(self) -> None:
        self.closed.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def serving(
    api: httpx.Client, fake_inngest: FakeInngestApi, **options: Any
) -> Iterator[StandInExecutor]:
    """The stand-in executor running every function of the app served at `api`."""
    from functions import ALL_FUNCTIONS

    serve_url = f"{str(api.base_url).rstrip('/')}/api/inngest"
    running = StandInExecutor(fake_inngest, serve_url, ALL_FUNCTIONS, **options)
    try:
        yield running
    finally:
        running.close()


def ended(
    api: httpx.Client, job_id: str, timeout_s: float = 60, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The job's status once it has ended (or the test fails after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = api.get(f"/jobs/{job_id}", headers=headers).json()
    while status["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
        status = api.get(f"/jobs/{job_id}", headers=headers).json()
    return status
