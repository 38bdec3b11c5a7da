"""The one Inngest client of the app, configured from settings; and the sender that batches the
events requests send at the same time (`EventBatcher`)."""

from __future__ import annotations

import asyncio
import logging

import inngest

from chunking.one_thread import Gatherer, Outcome
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


class EventBatcher:
    """`await send(event)`: the event's id once Inngest has it, or the send's error.

    The events that requests send at the same time go in one POST (a batch of up to MAX_BATCH),
    with at most MAX_IN_FLIGHT POSTs in flight (chunking/one_thread.py's Gatherer); an event
    sent alone goes at once, as alone. A POST costs the app the same CPU (the SDK's httpx)
    whatever its number of events: one per job was most of what accepting a job cost under load
    (BENCHMARKS.md).

    If a batch of several fails, each of its events is sent again alone, so that one event the
    API refuses (too large, say) fails its own request only.
    """

    def __init__(self, client: inngest.Inngest, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.client = client
        self._batches = Gatherer(self._post, max_batch=MAX_BATCH, in_flight=max_in_flight)

    async def send(self, event: inngest.Event) -> str:
        sent: str = await self._batches.submit(event)
        return sent

    async def _post(self, events: list[inngest.Event]) -> list[Outcome]:
        try:
            ids = await self.client.send(events)
        except Exception as err:
            if len(events) == 1:
                return [(False, err)]
            alone = await asyncio.gather(*(self._post([event]) for event in events))
            return [outcome for [outcome] in alone]
        return [(True, i) for i in (ids if len(ids) == len(events) else [""] * len(events))]


inngest_client = make_client(get_settings())
event_batcher = EventBatcher(inngest_client)
