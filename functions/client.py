"""The one Inngest client of the app, configured from settings; and the sender that batches the
events requests send at the same time (`EventBatcher`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import inngest

from chunking.settings import Settings, get_settings

# Inngest takes up to 5,000 events per request (docs: usage limits); a batch stays well below.
MAX_BATCH = 100
# POSTs in flight at once per event loop (each with its own batch): under the SDK pool's 20
# keep-alive connections, so that none is opened and closed for one send.
MAX_IN_FLIGHT = 4


def make_client(settings: Settings) -> inngest.Inngest:
    dev_url = settings.inngest_dev_url
    return inngest.Inngest(
        app_id=settings.inngest_app_id,
        is_production=not settings.inngest_dev_mode,
        api_base_url=dev_url,
        event_api_base_url=dev_url,
        signing_key=settings.inngest_signing_key,
        event_key=settings.inngest_event_key,
        logger=logging.getLogger("uvicorn"),
    )


@dataclass
class _Queue:
    """One event loop's events waiting for a POST, and its POSTs in flight."""

    waiting: list[tuple[inngest.Event, asyncio.Future[str]]] = field(default_factory=list)
    in_flight: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class EventBatcher:
    """`await send(event)`: the event's id once Inngest has it, or the send's error.

    The events that requests send at the same time go in one POST (a batch of up to MAX_BATCH),
    with at most MAX_IN_FLIGHT POSTs in flight; an event sent alone goes at once, as alone.
    A POST costs the app 0.7-0.9 ms of CPU (the SDK's httpx) whatever its number of events:
    one per job was most of what accepting a job cost under load (issue 13, point 5).

    If a batch of several fails, each of its events is sent again alone, so that one event the
    API refuses (too large, say) fails its own request only. Each event loop has its own queue.
    """

    def __init__(self, client: inngest.Inngest, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.client = client
        self.max_in_flight = max_in_flight
        self._queues: dict[asyncio.AbstractEventLoop, _Queue] = {}

    async def send(self, event: inngest.Event) -> str:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        sent: asyncio.Future[str] = loop.create_future()
        queue.waiting.append((event, sent))
        if queue.in_flight < self.max_in_flight:
            queue.in_flight += 1
            task = loop.create_task(self._post_batches(loop, queue))
            queue.tasks.add(task)  # a reference, until it ends
            task.add_done_callback(queue.tasks.discard)
        return await sent

    async def _post_batches(self, loop: asyncio.AbstractEventLoop, queue: _Queue) -> None:
        """POST what is waiting, a batch at a time, until nothing is."""
        try:
            while queue.waiting:
                batch = queue.waiting[:MAX_BATCH]
                del queue.waiting[:MAX_BATCH]
                try:
                    await self._post(batch)
                finally:  # cancelled (the loop is closing): its senders are, too
                    for _, sent in batch:
                        if not sent.done():
                            sent.cancel()
        finally:
            queue.in_flight -= 1
            if not queue.in_flight and not queue.waiting:
                self._queues.pop(loop, None)

    async def _post(self, batch: list[tuple[inngest.Event, asyncio.Future[str]]]) -> None:
        try:
            ids = await self.client.send([event for event, _ in batch])
        except Exception as err:
            if len(batch) > 1:  # each alone: the API may have refused the batch for one of them
                await asyncio.gather(*(self._post([one]) for one in batch))
                return
            outcomes: list[str | Exception] = [err]
        else:
            outcomes = list(ids) if len(ids) == len(batch) else [""] * len(batch)
        for (_, sent), outcome in zip(batch, outcomes, strict=True):
            if sent.done():  # its request was cancelled: the event was sent all the same
                continue
            if isinstance(outcome, Exception):
                sent.set_exception(outcome)
            else:
                sent.set_result(outcome)


inngest_client = make_client(get_settings())
event_batcher = EventBatcher(inngest_client)
