"""Failure handlers that survive an outage: each its own Inngest function, with retries.

inngest-py's `on_failure` registers its handler with no retries (`_internal/function.py`:
`Retries(attempts=0)`), so while the app is unreachable the engine's single delivery of it
fails, and the handler is lost with the run it should have handled. Here a handler is an
ordinary function triggered by the engine's `inngest/function.failed` event for one function
(the trigger the SDK registers, under the id the SDK gives it, `<function id>-failure`), with
FAILURE_RETRIES retries of its own: the engine spaces them along its backoff table (15 s, 30 s,
1 min, 2 min, 5 min, 10 min, 20 min, 40 min, 1 h, each with up to 30 s of jitter), so the
defaults' ten deliveries span about 2 h 20 min. What outlasts even that, the sweep of stalled
jobs finds (functions/sweep.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import inngest

from chunking.settings import get_settings
from chunking.store import JobStore
from functions.client import inngest_client
from functions.deps import get_store

FUNCTION_FAILED = "inngest/function.failed"


@dataclass(frozen=True)
class FailedRun:
    """What the engine says of a run that failed for good."""

    data: dict[str, Any]  # the failed run's triggering event's data
    message: str  # its error
    failed_at: datetime  # when the engine declared it failed

    @property
    def job_id(self) -> str | None:
        """The job the failed run was for, if its event named one."""
        job_id = self.data.get("job_id")
        return job_id if isinstance(job_id, str) else None


def failed_run(event: inngest.Event) -> FailedRun:
    """The failed run, from its `inngest/function.failed` event (missing parts read as empty)."""
    original = event.data.get("event")
    data = original.get("data") if isinstance(original, dict) else None
    error = event.data.get("error")
    message = error.get("message", "unknown") if isinstance(error, dict) else str(error)
    failed_at = datetime.fromtimestamp(event.ts / 1000, UTC) if event.ts else datetime.now(UTC)
    return FailedRun(data if isinstance(data, dict) else {}, str(message), failed_at)


Handler = Callable[[inngest.Context, FailedRun], Awaitable[None]]


async def record_for_job(
    ctx: inngest.Context,
    run: FailedRun,
    step_id: str,
    record: Callable[[JobStore, str, str], None],
    reason: str,
) -> None:
    """One step that records, in the failed run's job, why it failed: `record(store, job_id,
    reason)`, blocking I/O. Nothing to do when the run's event named no job."""
    if job_id := run.job_id:
        await ctx.step.run(step_id, asyncio.to_thread, record, get_store(), job_id, reason)


def failure_handler(
    of: inngest.Function,  # type: ignore[type-arg]
) -> Callable[[Handler], inngest.Function]:  # type: ignore[type-arg]
    """Register the decorated coroutine as the handler of `of`'s failed runs, with retries."""

    def register(handler: Handler) -> inngest.Function:  # type: ignore[type-arg]
        @inngest_client.create_function(
            fn_id=f"{of.local_id}-failure",
            name=f"{of.name} (failure)",
            trigger=inngest.TriggerEvent(
                event=FUNCTION_FAILED, expression=f"event.data.function_id == '{of.id}'"
            ),
            retries=get_settings().failure_retries,
        )
        async def handle(ctx: inngest.Context) -> None:
            await handler(ctx, failed_run(ctx.event))

        return handle

    return register
