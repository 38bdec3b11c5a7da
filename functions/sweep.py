"""sweep-stalled-jobs: an Inngest cron function that sends again the chunks stalled jobs lost.

The backstop behind the failure handlers (functions/failures.py): a run whose deliveries and
whose handler's deliveries all failed (an outage longer than both) leaves its chunk with no row,
or `running`, for ever. Each tick runs `recovery.sweep`, which finds the running jobs that have
shown no life for SWEEP_IDLE_S and the chunks they lost, a window at a time; this sends those
chunks again as fresh runs (`<job>-chunk-<i>-swept-<n>`), or records them failed once their
sweeps are spent. Its tick has retries of its own, and a tick lost in an outage costs nothing:
the next one finds the same jobs, since what it reads is in the job store.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import inngest

from chunking import recovery
from chunking.runner import settle
from chunking.settings import get_settings
from functions.client import inngest_client
from functions.deps import get_store
from functions.events import FAN_OUT_BATCH, chunk_event
from functions.process_chunk import finish_event


async def find_lost_chunks() -> list[dict[str, Any]]:
    store = get_store()  # its clock: the one that stamped the jobs' last signs of life
    lost = await asyncio.to_thread(recovery.sweep, store, store.now())
    return [asdict(chunk) for chunk in lost]


async def send_again(lost: list[dict[str, Any]]) -> int:
    events = [
        chunk_event(c["job_id"], c["chunk_index"], c["priority"], c["tenant"], sweep=c["sweep"])
        for c in lost
    ]
    await inngest_client.send(events)
    return len(events)


async def give_up(lost: list[dict[str, Any]]) -> int:
    """Record failed the chunks whose sweeps are spent; start the finish of the jobs that
    this completed."""
    sweeps = get_settings().chunk_max_resends
    finished = []
    for c in lost:
        reason = (
            f"lost: no run of this chunk reported back after {sweeps} sweeps of its job, "
            "which showed no life in between"
        )
        outcome = await settle(get_store(), c["job_id"], c["chunk_index"], error=reason)
        if outcome.recorded and outcome.job_finished:
            finished.append(await finish_event(c["job_id"]))
    if finished:
        await inngest_client.send(finished)
    return len(lost)


@inngest_client.create_function(
    fn_id="sweep-stalled-jobs",
    name="Sweep stalled jobs (send their lost chunks again)",
    trigger=inngest.TriggerCron(cron=get_settings().sweep_cron),
    retries=3,
    # One tick at a time: two would examine the same windows and send the same chunks twice.
    concurrency=[inngest.Concurrency(limit=1)],
)
async def sweep_stalled_jobs(ctx: inngest.Context) -> dict[str, int]:
    lost = await ctx.step.run("find-lost-chunks", find_lost_chunks)
    again = [c for c in lost if not c["give_up"]]
    spent = [c for c in lost if c["give_up"]]
    sent = 0
    for n, start in enumerate(range(0, len(again), FAN_OUT_BATCH), start=1):
        sent += await ctx.step.run(f"send-{n}", send_again, again[start : start + FAN_OUT_BATCH])
    failed = await ctx.step.run("give-up", give_up, spent) if spent else 0
    return {"resent": sent, "recorded_failed": failed}
