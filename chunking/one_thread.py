"""Blocking calls from an event loop, run on one thread, as many per trip as are waiting.

`asyncio.to_thread` per call costs far more than a short call itself under load: each trip
hands the GIL between the loop's thread and a worker and back, and 50 concurrent POST /jobs
spent ~1.4 ms of CPU per request on that alone, against 0.08 ms for recording the job (issue
13, point 5: p99 155-207 ms, where one trip per batch gives ~40 ms). `OneThread.run` queues
the call; one trip runs every call queued by then, one after another, each with its own
outcome, while the next calls gather for the following trip. Calls may also share a context
per trip: POST /jobs records the jobs of a trip in one transaction (`JobStore.batch`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from itertools import groupby
from typing import Any, TypeVar

T = TypeVar("T")
Within = Callable[[], AbstractContextManager[Any]]
_Call = tuple[Callable[[], Any], Within | None, "asyncio.Future[Any]"]


def _outcome(call: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, call()
    except Exception as err:
        return False, err


def _call_each(calls: list[tuple[Callable[[], Any], Within | None]]) -> list[tuple[bool, Any]]:
    """Each call's (ok, result or exception), on the worker thread; the calls of a trip that
    name the same `within` run inside one `within()` (e.g. one transaction for them all)."""
    outcomes: list[tuple[bool, Any]] = []
    for within, group in groupby(calls, key=lambda c: c[1]):
        together = [call for call, _ in group]
        try:
            with within() if within else nullcontext():
                done = [_outcome(call) for call in together]
        except Exception as err:  # what they shared failed (a commit, say): so did each
            done = [(False, err)] * len(together)
        outcomes.extend(done)
    return outcomes


class OneThread:
    """One worker thread; each event loop gathers its own calls for it."""

    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._waiting: dict[asyncio.AbstractEventLoop, list[_Call]] = {}
        self._trips: set[asyncio.Task[None]] = set()  # referenced until they end

    async def run(self, call: Callable[[], T], within: Within | None = None) -> T:
        """`call()`'s result (or exception), run on the thread; with `within`, inside the
        context it makes, shared with the trip's other calls that name the same one."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        waiting = self._waiting.get(loop)
        if waiting is None:  # no trip under way on this loop: this call starts them
            waiting = self._waiting[loop] = []
            trips = loop.create_task(self._make_trips(loop))
            self._trips.add(trips)
            trips.add_done_callback(self._trips.discard)
        waiting.append((call, within, done))
        return await done

    async def _make_trips(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while batch := self._waiting[loop]:
                self._waiting[loop] = []
                calls = [(call, within) for call, within, _ in batch]
                try:
                    outcomes = await loop.run_in_executor(self.executor, _call_each, calls)
                except BaseException:  # the loop is closing: its callers are cancelled too
                    for *_, done in batch:
                        done.cancel()
                    raise
                for (*_, done), (ok, value) in zip(batch, outcomes, strict=True):
                    if done.done():  # its caller was cancelled; the call ran all the same
                        continue
                    if ok:
                        done.set_result(value)
                    else:
                        done.set_exception(value)
        finally:
            for *_, done in self._waiting.pop(loop, []):
                done.cancel()
