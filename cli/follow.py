"""Following a job to its end: the local app's event stream (resumed where it broke), or the
cloud's status polled; each new status handed to a callback (the progress bar)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cli.api import UNREACHABLE, Api, CliError

TERMINAL = frozenset({"succeeded", "partial", "failed", "cancelled"})
# A status read is one row whatever the job's size; the stream's `chunk` events carry counts
# only, so the figures they lack (tokens, spend, 429s) are read again at most this often.
STATUS_EVERY_S = 1.0
# What a `chunk` event says of the whole job (its other fields are the chunk's own).
COUNTS = ("chunks_succeeded", "chunks_failed", "items_processed")
# A watch outlives a restart of the app or a blip of the network: it tries again this long.
RECONNECT_FOR_S = 60.0
RESUME_AFTER_S = 0.5

Status = dict[str, Any]


def ended(status: Status) -> bool:
    """The job is over: a cancelled one once its running chunks have finished too (as the
    local app's stream waits for them)."""
    if status.get("status") == "cancelled":
        accounted = sum(status.get(f"chunks_{s}", 0) for s in ("succeeded", "failed", "cancelled"))
        return bool(accounted >= status.get("total_chunks", 0))
    return status.get("status") in TERMINAL


def follow(api: Api, job_id: str, shown: Callable[[Status], None], poll_s: float = 2.0) -> Status:
    """Calls `shown` with the job's status as it changes; returns it once the job has ended."""
    status = api.status(job_id)
    shown(status)
    if ended(status):
        return status
    if api.target.streams:
        return _streamed(api, job_id, status, shown)
    return _polled(api, job_id, shown, poll_s)


def _polled(api: Api, job_id: str, shown: Callable[[Status], None], poll_s: float) -> Status:
    while True:
        time.sleep(poll_s)
        status = _again(lambda: api.status(job_id))
        shown(status)
        if ended(status):
            return status


def _streamed(api: Api, job_id: str, status: Status, shown: Callable[[Status], None]) -> Status:
    last_id: str | None = None
    read_at = time.monotonic()
    while True:
        try:
            for event, data, event_id in api.events(job_id, last_id):
                if event == "chunk":
                    last_id = event_id or last_id
                    # The counts as of this settlement, over the last full status read.
                    status = {**status, **{k: data[k] for k in COUNTS if k in data}}
                    if time.monotonic() - read_at >= STATUS_EVERY_S:
                        status, read_at = api.status(job_id), time.monotonic()
                elif event in ("status", "end"):
                    status, read_at = data, time.monotonic()
                shown(status)
                if event == "end":
                    return status
        except CliError as err:
            if err.code != UNREACHABLE:
                raise
        # The stream ended without `end` (an `error` event, or the app went away): resume,
        # not at once (a stream that keeps breaking must not become a busy loop).
        time.sleep(RESUME_AFTER_S)
        status = _again(lambda: api.status(job_id))
        if ended(status):
            shown(status)
            return status


def _again(read: Callable[[], Status]) -> Status:
    """A poll that outlives a blip: tried again for RECONNECT_FOR_S."""
    deadline = time.monotonic() + RECONNECT_FOR_S
    while True:
        try:
            return read()
        except CliError as err:
            if err.code != UNREACHABLE or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
