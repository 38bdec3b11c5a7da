"""OneThread: blocking calls from a loop, run on one thread, those waiting together per trip."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest

from chunking import one_thread
from chunking.one_thread import OneThread


def test_calls_waiting_together_go_in_one_trip_each_with_its_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trips: list[int] = []
    real = one_thread._call_each

    def counted(calls: list[tuple[Callable[[], Any], Any]]) -> list[tuple[bool, Any]]:
        trips.append(len(calls))
        return real(calls)

    monkeypatch.setattr(one_thread, "_call_each", counted)
    worker = OneThread("test")
    release = threading.Event()
    threads: set[str] = set()

    def call(i: int) -> int:
        threads.add(threading.current_thread().name)
        if i == 0:
            release.wait(5)  # the first trip is busy while the others gather
        if i == 5:
            raise ValueError("five")
        return i * 10

    async def main() -> list[int | BaseException]:
        first = asyncio.ensure_future(worker.run(partial(call, 0)))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(worker.run(partial(call, i))) for i in range(1, 11)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert trips == [1, 10]
    assert len(threads) == 1
    assert isinstance(outcomes[5], ValueError)
    assert [o for i, o in enumerate(outcomes) if i != 5] == [i * 10 for i in range(11) if i != 5]


def test_a_cancelled_caller_leaves_its_call_to_run_and_the_others_unharmed() -> None:
    worker = OneThread("test")
    ran: list[int] = []
    release = threading.Event()

    def call(i: int) -> int:
        if i == 0:
            release.wait(5)
        ran.append(i)
        return i

    async def main() -> list[int]:
        first = asyncio.ensure_future(worker.run(lambda: call(0)))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(worker.run(lambda: call(1)))
        kept = asyncio.ensure_future(worker.run(lambda: call(2)))
        await asyncio.sleep(0.01)
        gone.cancel()
        release.set()
        return [await first, await kept]

    assert asyncio.run(main()) == [0, 2]
    assert ran == [0, 1, 2]


def test_each_event_loop_gathers_its_own_calls() -> None:
    worker = OneThread("test")
    assert asyncio.run(worker.run(lambda: "first loop")) == "first loop"
    assert asyncio.run(worker.run(lambda: "second loop")) == "second loop"


def test_calls_naming_the_same_context_share_it_and_keep_their_own_outcomes() -> None:
    worker = OneThread("test")
    entered: list[str] = []
    release = threading.Event()

    @contextmanager
    def shared(name: str, fail: bool = False) -> Iterator[None]:
        entered.append(name)
        yield
        if fail:
            raise RuntimeError(f"{name} could not commit")

    tx_a, tx_b = partial(shared, "a"), partial(shared, "b", fail=True)

    def call(i: int) -> int:
        if i == 0:
            release.wait(5)
        if i == 2:
            raise ValueError("two")
        return i

    async def main() -> list[int | BaseException]:
        first = asyncio.ensure_future(worker.run(partial(call, 0)))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(worker.run(partial(call, i), within=tx_a)) for i in (1, 2, 3)]
        rest.append(asyncio.ensure_future(worker.run(partial(call, 4), within=tx_b)))
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert entered == ["a", "b"]  # one context for 1, 2 and 3; another for 4
    assert outcomes[:2] == [0, 1] and isinstance(outcomes[2], ValueError) and outcomes[3] == 3
    assert isinstance(outcomes[4], RuntimeError)  # its context failed: so did its call
