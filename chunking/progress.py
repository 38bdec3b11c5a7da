"""A job's progress as a stream of events (the local API's `GET /jobs/{job_id}/events`), read
from any JobStore.

One `chunk` event per settled chunk, in the order the chunks settled, its id the settlement's
sequence number (so `Last-Event-ID` resumes exactly after it: no gap, no repeat), with the
job's counts as of that settlement; then one `end` event carrying the final status JSON. The
`status` snapshot sent on connecting and the `end` event carry no id, so they never move the
point a reconnect resumes from.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from chunking.status import TERMINAL_STATUSES
from chunking.store import JobStore

SETTLED_PAGE = 500  # settled chunks read at once: one read's cost is bounded, not the job's size


@dataclass(frozen=True)
class ProgressEvent:
    event: str  # "status" | "chunk" | "end"
    data: dict[str, Any]
    id: str | None = None


async def job_events(
    store: JobStore, job_id: str, after_seq: int = 0, poll_s: float = 0.5
) -> AsyncIterator[ProgressEvent]:
    """The job's events after `after_seq` (0: from the start), until the job has ended."""
    status = await asyncio.to_thread(store.status, job_id)
    if status is None:
        return
    yield ProgressEvent("status", status.model_dump(mode="json"))
    last = after_seq
    while True:
        # Read the status first: settlements it already counts are then surely in the list.
        status = await asyncio.to_thread(store.status, job_id)
        assert status is not None
        while True:  # a page at a time: a stream that starts from 0 on a big job reads in steps
            page = await asyncio.to_thread(store.settled_since, job_id, last, SETTLED_PAGE)
            for chunk in page:
                last = chunk.seq or last
                # The job's counts as of this settlement, kept on its row when it settled: a
                # reconnect resumes without recounting what came before.
                counts = asdict(chunk.progress) if chunk.progress else {}
                data = {
                    "chunk_index": chunk.index,
                    "outcome": chunk.state,
                    "error": chunk.error,
                    "attempts": chunk.attempts,
                    "total_chunks": status.total_chunks,
                    **counts,
                }
                yield ProgressEvent("chunk", data, id=str(chunk.seq))
            if len(page) < SETTLED_PAGE:
                break
        # A cancelled job's running chunks still finish: the stream waits for them.
        accounted = status.chunks_succeeded + status.chunks_failed + status.chunks_cancelled
        if status.status in TERMINAL_STATUSES and (
            status.status != "cancelled" or accounted == status.total_chunks
        ):
            yield ProgressEvent("end", status.model_dump(mode="json"))
            return
        await asyncio.sleep(poll_s)
