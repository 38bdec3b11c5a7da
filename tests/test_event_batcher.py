"""The app's event sends under load: the events requests send at the same time share a POST,
and one event the API refuses fails its own request only (functions/client.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import inngest

from tests.support import FakeInngestApi

T = TypeVar("T")


def on_the_apps_loop(work: Coroutine[Any, Any, T]) -> T:
    """The SDK's HTTP client keeps connections bound to the loop that opened them: one loop, as
    in the app (tests/conftest.py)."""
    from tests.conftest import SESSION_LOOP

    return SESSION_LOOP.run_until_complete(work)


def events(n: int, prefix: str = "e") -> list[inngest.Event]:
    return [inngest.Event(name="test/batched", id=f"{prefix}-{i}", data={"i": i}) for i in range(n)]


def test_concurrent_sends_share_posts_and_each_gets_its_id(fake_inngest: FakeInngestApi) -> None:
    from functions.client import event_batcher

    async def send_all() -> list[str]:
        return await asyncio.gather(*(event_batcher.send(e) for e in events(60)))

    ids = on_the_apps_loop(send_all())
    assert ids == [f"e-{i}" for i in range(60)]
    assert sorted(e["data"]["i"] for e in fake_inngest.named("test/batched")) == list(range(60))
    assert fake_inngest.posts <= 8  # one by one would be 60


def test_an_event_alone_goes_at_once_in_a_post_of_its_own(fake_inngest: FakeInngestApi) -> None:
    from functions.client import event_batcher

    assert on_the_apps_loop(event_batcher.send(events(1)[0])) == "e-0"
    assert fake_inngest.posts == 1


def test_a_refused_event_fails_its_own_send_only(fake_inngest: FakeInngestApi) -> None:
    from functions.client import event_batcher

    fake_inngest.refuse = lambda event: event["data"]["i"] == 7

    async def send_all() -> list[str | BaseException]:
        return await asyncio.gather(
            *(event_batcher.send(e) for e in events(30)), return_exceptions=True
        )

    outcomes = on_the_apps_loop(send_all())
    assert isinstance(outcomes[7], Exception)
    assert [o for i, o in enumerate(outcomes) if i != 7] == [f"e-{i}" for i in range(30) if i != 7]
    arrived = sorted(e["data"]["i"] for e in fake_inngest.named("test/batched"))
    assert arrived == [i for i in range(30) if i != 7]


def test_jobs_submitted_together_are_each_recorded_and_started(
    api: httpx.Client, fake_inngest: FakeInngestApi
) -> None:
    from functions.deps import get_store

    async def submit_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as http:
            return await asyncio.gather(
                *(http.post("/jobs", json={"job_id": f"j{i}", "total_items": 4, "chunk_size": 2})
                  for i in range(40))
            )  # fmt: skip

    answers = asyncio.run(submit_all())
    assert [a.status_code for a in answers] == [202] * 40
    started = sorted(e["data"]["job_id"] for e in fake_inngest.named("demo/start_job"))
    assert started == sorted(f"j{i}" for i in range(40))
    assert fake_inngest.posts < 40  # they shared POSTs
    store = get_store()
    assert all(store.get_job(f"j{i}") is not None for i in range(40))
