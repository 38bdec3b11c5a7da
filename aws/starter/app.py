"""Starter Lambda: POST /start validates the JobSpec, records the job and enqueues its chunks;
POST /jobs/{job_id}/cancel cancels it (workers then drop its chunks that have not started);
POST /jobs/{job_id}/retry runs again what failed of a job that ended partial or failed;
POST /inputs says where an llm input goes in the data bucket, with a presigned PUT to send it."""

from __future__ import annotations

import base64
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

import workloads  # noqa: F401 - registers the workloads with the core, as every entrypoint does
from chunking import metrics, workload
from chunking.api_errors import BodyError, invalid_spec, parse_json_body
from chunking.errors import InputUnavailableError
from chunking.lifecycle import (
    EnqueueError,
    FirstWork,
    JobNotRetryableError,
    PlanJob,
    retry_unsent,
    submit,
)
from chunking.lifecycle import cancel as cancel_job
from chunking.lifecycle import retry as retry_job
from chunking.spec import JobSpec
from chunking.status import JobRecord
from chunking.store import JobConflictError, JobEndedError
from chunking.tenancy import claim
from cloud import chunk_queue, data_bucket, job_store, queue_for
from cloud.http import NO_TENANT, caller_of, callers_job, reply
from cloud.messages import PlanMessage, QueueMessage, RetryMessage, StopMessage, initial_messages
from cloud.metrics import EmfSink
from workloads.llm import blobs, uploads

metrics.use(EmfSink())  # chunking/metrics.py: CloudWatch metrics, as EMF log lines
logger = Logger()
app = APIGatewayRestResolver()


def status_url(job_id: str) -> str:
    """Absolute URL of GET /jobs/{job_id} on the API that received this request."""
    ctx = app.current_event.request_context
    proto = app.current_event.headers.get("X-Forwarded-Proto", "https")
    base = ctx.path.rsplit("/start", 1)[0]  # "/Prod/start" -> "/Prod"
    return f"{proto}://{ctx.domain_name}{base}/jobs/{job_id}"


def accepted(job: JobRecord, message: str) -> dict[str, Any]:
    counted = job.state != "queued" or workload.of(job.spec).known_items(job.spec) is not None
    return {
        "message": message,
        "job_id": job.job_id,
        "status_url": status_url(job.job_id),
        # null while the job's first worker counts its input (never inside this request)
        "total_items": job.total_items if counted else None,
        "chunk_size": job.spec.chunk_size,
        "chunks_created": job.total_chunks if counted else None,
    }


def raw_body() -> bytes:
    """The request body's bytes: API Gateway base64-encodes a body that is not UTF-8 text."""
    event = app.current_event
    body = event.body or ""
    if event.is_base64_encoded:
        return base64.b64decode(body)
    return body.encode("utf-8", "surrogatepass")


@app.post("/start")
def start() -> Response[str]:
    caller = caller_of(app.current_event)
    if caller is None:
        return reply(403, NO_TENANT)
    try:
        spec = JobSpec.model_validate(claim(parse_json_body(raw_body()) or {}, caller))
        uploads.check_own_input(spec, caller, data_bucket)  # a tenant's input: its uploads only
        submission = submit(
            job_store(),
            spec,
            "cloud",
            send_first_work,
            plan_known_items=True,
            what="enqueue chunks",
        )
    except BodyError as err:
        return reply(err.status, {"message": str(err)})
    except ValidationError as err:
        return reply(400, invalid_spec(err))
    except JobConflictError as err:
        return reply(409, {"message": str(err)})
    except InputUnavailableError as err:  # S3 did not answer: not the caller's fault
        return reply(503, {"message": str(err)})
    except EnqueueError as err:
        logger.exception("could not enqueue the job's chunks")
        return reply(503, {"message": str(err), "job_id": err.job_id})
    job = submission.job
    logger.append_keys(job_id=job.job_id)
    if not submission.enqueued:  # the same job_id and spec again: nothing is enqueued twice
        return reply(200, accepted(job, f"job {job.job_id} already exists ({job.state})"))
    logger.info("job accepted", extra={"total_chunks": job.total_chunks})
    return reply(202, accepted(job, "job accepted"))


def send_first_work(work: FirstWork) -> None:
    """Send the job's first work as SQS messages, and nothing more: a plan message (a worker
    counts and indexes its input, in a budget, resumable), or its chunks, planned already."""
    job_id = work.job.job_id
    if isinstance(work, PlanJob):
        messages: list[QueueMessage] = [PlanMessage(job_id=job_id)]
    else:
        messages = initial_messages(job_id, work.total_chunks)
    queue_for(work.job.spec.priority).send(messages)


def not_the_callers(job_id: str) -> Response[str] | None:
    """callers_job's refusal; None when the caller may act on the job."""
    job = callers_job(app.current_event, job_store(), job_id)
    return job if isinstance(job, Response) else None


@app.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> Response[str]:
    logger.append_keys(job_id=job_id)
    if refused := not_the_callers(job_id):
        return refused
    try:
        status = cancel_job(job_store(), job_id)
    except JobEndedError as err:
        return reply(409, {"message": str(err)})
    if status is None:
        return reply(404, {"message": f"no job with job_id {job_id!r}"})
    try:
        # What its running chunks started outside (provider batches) is stopped by a worker.
        chunk_queue().send([StopMessage(job_id=job_id)])
    except Exception:  # each chunk's next poll stops its own batch anyway
        logger.exception("the stop message was not sent")
    logger.info("job cancelled")
    return reply(200, status.model_dump(mode="json"))


@app.post("/jobs/<job_id>/retry")
def retry(job_id: str) -> Response[str]:
    """Run again only what failed of a job that ended partial or failed: 202 with its status;
    409 when it is running, succeeded, cancelled or retried too often."""
    logger.append_keys(job_id=job_id)
    if refused := not_the_callers(job_id):
        return refused
    store = job_store()
    try:
        status = retry_job(store, job_id)
    except JobNotRetryableError as err:
        return reply(409, {"message": str(err)})
    if status is None:
        return reply(404, {"message": f"no job with job_id {job_id!r}"})
    try:
        chunk_queue().send([RetryMessage(job_id=job_id, redrive=status.redrives)])
    except Exception as err:
        logger.exception("the retry message was not sent")
        reason = f"the retry could not be enqueued: {err}"
        retry_unsent(store, job_id, reason)
        return reply(503, {"message": reason})
    logger.info("job retried", extra={"redrive": status.redrives})
    return reply(202, status.model_dump(mode="json"))


@app.post("/inputs")
def announce_input() -> Response[str]:
    """Where an llm input of this SHA-256 and size goes (inputs/<tenant>/<sha256>.jsonl): its
    s3:// input_uri, and a presigned PUT that S3 accepts only with those bytes (the SHA-256 is
    signed into it); `upload: null` when the object is there already with that size."""
    caller = caller_of(app.current_event)
    if caller is None:
        return reply(403, NO_TENANT)
    try:
        upload = uploads.upload_request(raw_body())
    except uploads.RefusedRequest as err:
        return reply(err.status, err.body)
    uri = uploads.s3_input_uri(data_bucket(), caller, upload.sha256)
    try:
        there = uploads.size_if_there(uri) == upload.size
    except blobs.StoreUnavailableError as err:
        return reply(503, {"message": str(err)})
    how = None
    if not there:
        url, headers = blobs.presigned_put(uri, upload.sha256, uploads.UPLOAD_URL_EXPIRES_S)
        how = uploads.Upload(url=url, headers=headers)
    return reply(200, uploads.InputSlot(input_uri=uri, upload=how).model_dump(mode="json"))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
