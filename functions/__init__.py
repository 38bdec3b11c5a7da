"""Inngest side of the local path: one client module, one module per function."""

from __future__ import annotations

import inngest

import workloads  # noqa: F401 - registers the workloads with the core, as every entrypoint does
from functions.bad_long_job import bad_long_job
from functions.finish_job import finish_job, finish_job_failed
from functions.process_chunk import (
    poll_chunk,
    poll_chunk_failed,
    process_chunk,
    process_chunk_failed,
)
from functions.retry_job import retry_job
from functions.send_callback import send_callback
from functions.start_job import start_job, start_job_failed
from functions.stop_job import stop_cancelled_job
from functions.sweep import sweep_stalled_jobs
from functions.trigger_aws_sam_job import trigger_aws_sam_job

ALL_FUNCTIONS: list[inngest.Function] = [  # type: ignore[type-arg]
    bad_long_job,
    start_job,
    start_job_failed,
    process_chunk,
    process_chunk_failed,
    poll_chunk,
    poll_chunk_failed,
    finish_job,
    finish_job_failed,
    stop_cancelled_job,
    retry_job,
    trigger_aws_sam_job,
    send_callback,
    sweep_stalled_jobs,
]
