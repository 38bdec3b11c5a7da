"""Event names of the contract and builders for the events the functions send."""

from __future__ import annotations

import uuid
from typing import Any

import inngest

# Inngest accepts up to 1,000 events per send; 100,000 chunks then fit in 100 send steps.
FAN_OUT_BATCH = 1_000

BAD_LONG_JOB = "demo/bad_long_job"
START_JOB = "demo/start_job"
PROCESS_CHUNK = "demo/process_chunk"
POLL_CHUNK = "demo/poll_chunk"  # a chunk waiting on its provider's batch, looked at again
TRIGGER_AWS_SAM_JOB = "demo/trigger_aws_sam_job"
JOB_COMPLETED = "demo/job_completed"
FINISH_JOB = "demo/finish_job"
JOB_CANCELLED = "demo/job_cancelled"
RETRY_JOB = "demo/retry_job"  # a job that ended partial or failed runs what failed again

# Inngest cancels a waiting or running run of a job's functions when this event names its job.
CANCEL_ON_JOB_CANCELLED = inngest.Cancel(
    event=JOB_CANCELLED, if_exp="async.data.job_id == event.data.job_id"
)


# Explicit event ids make every send idempotent: Inngest drops an event whose id it has
# already seen (24 h window), so a retried send step or request never duplicates work.
def start_job_event(spec_data: dict[str, Any], *, resend: bool = False) -> inngest.Event:
    """`resend` for a job restarted after a failed start: Inngest may have kept the first id."""
    event_id = f"start-{spec_data['job_id']}"
    if resend:
        event_id += f"-{uuid.uuid4().hex[:12]}"
    return inngest.Event(name=START_JOB, id=event_id, data=spec_data)


# Inngest orders waiting runs by this: a high job's chunks go ahead of chunks queued up to
# 10 minutes (the most Inngest allows) before them; a low job's wait as long behind the rest.
PRIORITY_EXPRESSION = (
    "event.data.priority == 'high' ? 600 : (event.data.priority == 'low' ? -600 : 0)"
)
TENANT_KEY = "event.data.tenant"


def chunk_event(
    job_id: str,
    chunk_index: int,
    priority: str = "normal",
    tenant: str = "default",
    continuation: int = 0,
    resend: int = 0,
    sweep: int = 0,
    poll: int = 0,
    wait_s: float = 0,
    redrive: int = 0,
) -> inngest.Event:
    """The chunk's job, index, and what Inngest's priority and per-tenant limit read;
    `continuation` n > 0 for the n-th run going on where one out of budget stopped, `resend`
    n > 0 for the n-th fresh run of one whose deliveries all failed before it began, `sweep`
    n > 0 for a chunk its stalled job lost, sent again by the n-th sweep of that job (and
    every run that goes on from it: its ids never meet the lost lineage's). `poll` n > 0 for
    the n-th look at a chunk waiting on its provider's batch, `wait_s` after the last: a
    demo/poll_chunk event, whose run sleeps that long first (durably). `redrive` n > 0 for a
    chunk the job's n-th retry runs again (and every run going on from it)."""
    data: dict[str, Any] = {
        "job_id": job_id,
        "chunk_index": chunk_index,
        "priority": priority,
        "tenant": tenant,
    }
    event_id = f"{job_id}-chunk-{chunk_index}"
    if redrive:
        data["redrive"] = redrive
        event_id += f"-redriven-{redrive}"
    if sweep:
        data["sweep"] = sweep
        event_id += f"-swept-{sweep}"
    if continuation:
        data["continuation"] = continuation
        event_id += f"-continued-{continuation}"
    if resend:
        data["resend"] = resend
        event_id += f"-resent-{resend}"
    if poll:
        data |= {"poll": poll, "wait_s": wait_s}
        event_id += f"-poll-{poll}"
    return inngest.Event(name=POLL_CHUNK if poll else PROCESS_CHUNK, id=event_id, data=data)


def _ended(job_id: str, what: str, redrives: int) -> str:
    """The id of what a job's end sends: once per run of the job (a retried job ends again)."""
    return f"{job_id}-{what}" + (f"-{redrives}" if redrives else "")


def finish_job_event(job_id: str, redrives: int = 0) -> inngest.Event:
    """Every chunk has settled: the job's finishing unit (its output, then its announcement),
    once per run of the job (`redrives`: its retries so far)."""
    event_id = _ended(job_id, "finish", redrives)
    return inngest.Event(name=FINISH_JOB, id=event_id, data={"job_id": job_id})


def retry_job_event(job_id: str, redrive: int) -> inngest.Event:
    return inngest.Event(
        name=RETRY_JOB, id=f"{job_id}-retry-{redrive}", data={"job_id": job_id, "redrive": redrive}
    )


def job_cancelled_event(job_id: str) -> inngest.Event:
    return inngest.Event(name=JOB_CANCELLED, id=f"{job_id}-cancelled", data={"job_id": job_id})


def job_completed_event(summary: dict[str, Any]) -> inngest.Event:
    event_id = _ended(summary["job_id"], "completed", int(summary.get("redrives") or 0))
    return inngest.Event(name=JOB_COMPLETED, id=event_id, data=summary)
