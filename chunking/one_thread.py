"""Work an event loop's callers submit at the same time, done in batches: `Gatherer`; and its
use for blocking calls, `OneThread`, which runs them on one thread, as many per trip as wait.

`asyncio.to_thread` per call costs far more than a short call itself under load: each trip
hands the GIL between the loop's thread and a worker and back, many times what recording a job
costs (BENCHMARKS.md, accepting jobs under load). `OneThread.run` queues
the call; one trip runs every call queued by then, one after another, each with its own
outcome, while the next calls gather for the following trip. Calls may also share a context
per trip: POST /jobs records the jobs of a trip in one transaction (`JobStore.batch`). The
app's event sends are batched by the same `Gatherer` (functions/client.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Item = TypeVar("Item")
Outcome = tuple[bool, Any]  # (True, result) or (False, the exception)
Within = Callable[[], AbstractContextManager[Any]]


@dataclass
class _Queue(Generic[Item]):
    """One event loop's items waiting for a batch, and how many batches it has under way."""

    waiting: list[tuple[Item, asyncio.Future[Any]]] = field(default_factory=list)
    flushing: int = 0


class Gatherer(Generic[Item]):
    """`await submit(item)`: the item's own outcome, once `flush` has handled it in a batch.

    A batch is what is waiting when a flush begins (at most `max_batch` items); at most
    `in_flight` flushes are under way at once; an item submitted alone goes at once, alone.
    `flush` returns one Outcome per item, in order. Each event loop gathers its own items.
    """

    def __init__(
        self,
        flush: Callable[[list[Item]], Awaitable[list[Outcome]]],
        *,
        max_batch: int | None = None,
        in_flight: int = 1,
    ) -> None:
        self.flush, self.max_batch, self.in_flight = flush, max_batch, in_flight
        self._queues: dict[asyncio.AbstractEventLoop, _Queue[Item]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # referenced until they end

    async def submit(self, item: Item) -> Any:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        done: asyncio.Future[Any] = loop.create_future()
        queue.waiting.append((item, done))
        if queue.flushing < self.in_flight:
            queue.flushing += 1
            task = loop.create_task(self._drain(loop, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await done

    async def _drain(self, loop: asyncio.AbstractEventLoop, queue: _Queue[Item]) -> None:
        """Flush what is waiting, a batch at a time, until nothing is."""
        try:
            while queue.waiting:
                size = self.max_batch or len(queue.waiting)
                batch = queue.waiting[:size]
                del queue.waiting[:size]
                try:
                    outcomes = await self.flush([item for item, _ in batch])
                except BaseException:  # the loop is closing: its callers are cancelled too
                    for _, done in batch:
                        done.cancel()
                    raise
                for (_, done), (ok, value) in zip(batch, outcomes, strict=True):
                    if done.done():  # its caller was cancelled; its item was handled all the same
                        continue
                    if ok:
                        done.set_result(value)
                    else:
                        done.set_exception(value)
        finally:
            queue.flushing -= 1
            if not queue.flushing:  # none left to flush what still waits: never leave it hanging
                for _, done in queue.waiting:
                    done.cancel()
                self._queues.pop(loop, None)


def _outcome(call: Callable[[], Any]) -> Outcome:
    try:
        return True, call()
    except Exception as err:
        return False, err


def _call_each(calls: list[tuple[Callable[[], Any], Within | None]]) -> list[Outcome]:
    """Each call's outcome, on the worker thread; the calls of a trip that name the same
    `within` run inside one `within()` (e.g. one transaction for them all)."""
    outcomes: list[Outcome] = []
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
    """One worker thread, fed a trip at a time by a Gatherer."""

    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._calls: Gatherer[tuple[Callable[[], Any], Within | None]] = Gatherer(self._trip)

    async def run(self, call: Callable[[], T], within: Within | None = None) -> T:
        """`call()`'s result (or exception), run on the thread; with `within`, inside the
        context it makes, shared with the trip's other calls that name the same one."""
        result: T = await self._calls.submit((call, within))
        return result

    async def _trip(self, calls: list[tuple[Callable[[], Any], Within | None]]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, _call_each, calls)
