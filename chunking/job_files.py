"""Which file of a job GET /jobs/{job_id}/output and /errors serve (both APIs), or why there is
none: an llm job's merged output and its file of failed items exist only once it has ended."""

from __future__ import annotations

from typing import Literal

from chunking import workload
from chunking.status import JobRecord, JobStatus

JobFile = Literal["output", "errors"]
NDJSON = "application/x-ndjson"


class NoJobFileError(LookupError):
    """The job has no such file (yet, or ever); the message says why (both APIs' 409)."""


def job_file(job: JobRecord, status: JobStatus, which: JobFile) -> str:
    """The URI of the job's `which` file, from its status (what GET /jobs/{job_id} shows: a job
    still merging its output is `running`); NoJobFileError when it has none."""
    name = f"job {job.job_id!r}"
    if not workload.of(job.spec).produces_output:
        raise NoJobFileError(f"{name} is a {job.spec.workload} job: it writes no {which} file")
    if status.status in ("queued", "running"):
        raise NoJobFileError(f"{name} is {status.status}: its {which} file is written when it ends")
    if status.output_uri is None:
        raise NoJobFileError(f"{name} ended {status.status} without an output file")
    if which == "output":
        return status.output_uri
    if status.errors_uri is None:
        raise NoJobFileError(f"{name} has no errors file: no item failed")
    return status.errors_uri
