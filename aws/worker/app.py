"""Worker Lambda: one SQS batch of chunk, range, plan, finish or callback messages, failures
reported per record.

The adapter between SQS's delivery model and the core's error taxonomy:
- transient error -> the record is reported failed and made visible again after a backoff;
- rate limit -> the same, after the Retry-After the server asked for;
- permanent error -> the chunk is recorded failed and the message goes to the DLQ at once;
- the last receive (ApproximateReceiveCount = MAX_RECEIVE_COUNT) settles the chunk failed and
  reports the record failed, so SQS's redrive policy moves it to the DLQ;
- a chunk still running near the invocation's timeout is stopped and counts as a transient
  failure, so its outcome is recorded before Lambda kills the run;
- a chunk that stopped to respect its budget, having made progress, goes on in a fresh message
  (a continuation: its receive count, so its retries, start again; bounded by the runner);
- a chunk waiting on its provider's batch (batch mode) is looked at again by a fresh message
  sent with a delay (SQS DelaySeconds): no Lambda runs while the provider works;
- a plan message counts (and indexes) a job's input within the invocation's time, goes on in
  a fresh message if that is not enough, then starts the job and enqueues its chunks;
- a stop message (sent when a job is cancelled) cancels its running chunks' provider batches,
  a page of chunks per message;
- the chunk that finishes a job enqueues a finish message: the job's results (the llm merge)
  with the invocation's whole budget, then a callback message if it asked for one, each
  delivered (and retried, or dead-lettered) by the same rules, never inside a chunk's run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

import workloads  # noqa: F401 - registers the workloads with the core, as every entrypoint does
from chunking import lifecycle, metrics
from chunking.callbacks import send_job_callback
from chunking.errors import PermanentError, RateLimitedError, backoff_s
from chunking.lifecycle import RetryStep
from chunking.runner import attempt_chunk
from chunking.settings import get_settings
from cloud import chunk_queue, dead_letter_queue, job_store, queue_for, queue_of
from cloud.messages import (
    CallbackMessage,
    ChunkMessage,
    FinishMessage,
    PlanMessage,
    QueueMessage,
    RangeMessage,
    RetryMessage,
    StopMessage,
    expand,
    initial_messages,
    parse_message,
)
from cloud.metrics import EmfSink
from cloud.sqs_queue import SqsQueue

metrics.use(EmfSink())  # chunking/metrics.py: CloudWatch metrics, as EMF log lines
logger = Logger()
# Report a batch whose every record failed as item failures too, not as a function error:
# each record already carries its own retry delay.
processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

# Time kept back from the invocation's remaining time to record outcomes before Lambda's kill.
MARGIN_MAX_S = 5.0


class RetryLater(Exception):
    """Reported to SQS as a batch item failure: the message is delivered again."""


def dead_letter(record: SQSRecord, reason: str) -> None:
    """Move a message to the DLQ now, with its reason; the main queue then deletes it."""
    dead_letter_queue().send_raw(
        record.body,
        {
            "error": reason[:4000],
            "source_message_id": record.message_id,
            "receive_count": record.attributes.approximate_receive_count,
        },
    )


@dataclass(frozen=True)
class Delivery:
    """A received record, with what its handler needs besides its message."""

    record: SQSRecord
    source: SqsQueue  # the queue it came from: backoff, Retry-After and follow-ups go there
    context: LambdaContext  # the invocation: how long a chunk or a plan may run
    log: dict[str, Any]  # the keys every log line of this record carries


def retry_later(delivery: Delivery, err: Exception, what: str, log: dict[str, Any]) -> RetryLater:
    """Hide the message for the wait the error asks for (a rate limit's Retry-After, else an
    exponential backoff by receive count); SQS then delivers it again."""
    if isinstance(err, RateLimitedError):
        # Never sooner than the server asked: the batching window may only add to it.
        wait = hidden = err.retry_after_s
    else:
        # Once visible again the message waits up to BATCHING_WINDOW_S in the event source (all
        # of it on a quiet queue) before we are invoked: hide it that much less, so the wait
        # between two runs is the backoff, as on the local path, not backoff + window.
        wait = backoff_s(receive_count(delivery.record))
        hidden = max(0.0, wait - get_settings().batching_window_s)
    logger.warning(what, extra={**log, "error": str(err), "retry_in_s": wait})
    delivery.source.delay(delivery.record.receipt_handle, hidden)
    return RetryLater(str(err))


async def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> str:
    """One record: its message parsed and handed to the handler of its kind (HANDLERS); a body
    that is none of our messages goes to the DLQ at once."""
    try:
        message = parse_message(record.body)
    except ValidationError as err:
        logger.error("not a chunk message: dead-lettered", extra={"message_id": record.message_id})
        dead_letter(record, f"not a chunk or range message: {err}")
        return "dead-lettered"
    log = {"job_id": message.job_id, "receive_count": receive_count(record)}
    delivery = Delivery(record, queue_of(record.event_source_arn), lambda_context, log)
    return await HANDLERS[type(message)](delivery, message)


def receive_count(record: SQSRecord) -> int:
    return int(record.attributes.approximate_receive_count)


def deadline_s(context: LambdaContext) -> float:
    """Seconds a chunk may run: what the invocation has left, less a margin to record it."""
    remaining_s = context.get_remaining_time_in_millis() / 1000
    return max(0.1, remaining_s - min(MARGIN_MAX_S, 0.2 * remaining_s))


async def expand_range(delivery: Delivery, message: RangeMessage) -> str:
    job = job_store().get_job(message.job_id)
    if job is not None and job.state == "cancelled":
        logger.info("range of a cancelled job dropped", extra=delivery.log)
        return "cancelled"
    parts = expand(message)
    delivery.source.send(parts)
    span = {"first": message.first, "stop": message.stop, "messages": len(parts)}
    logger.info("range expanded", extra={**delivery.log, **span})
    return "expanded"


async def plan_job(delivery: Delivery, message: PlanMessage) -> str:
    log = delivery.log
    deadline = time.monotonic() + deadline_s(delivery.context)
    try:
        outcome = lifecycle.plan(job_store(), message.job_id, message.resume, deadline)
    except LookupError as err:
        dead_letter(delivery.record, str(err))
        return "dead-lettered"
    except Exception as err:  # e.g. S3 did not answer: read it again later
        raise retry_later(delivery, err, "planning failed", log) from err
    if outcome.resume is not None:
        delivery.source.send([PlanMessage(job_id=message.job_id, resume=outcome.resume)])
        logger.info("planning goes on in a new message", extra={**log, "at": outcome.resume})
        return "continued"
    if outcome.failed is not None:
        logger.warning("job cannot run", extra={**log, "error": outcome.failed})
        return "failed"
    if outcome.started:
        job = job_store().get_job(message.job_id)
        priority = job.spec.priority if job is not None else "normal"
        queue_for(priority).send(initial_messages(message.job_id, outcome.total_chunks))
        logger.info("job planned and started", extra={**log, "chunks": outcome.total_chunks})
        return "started"
    return "duplicate"


async def finish_job(delivery: Delivery, message: FinishMessage) -> str:
    job_id, log = message.job_id, delivery.log
    try:
        lifecycle.finish(job_store(), job_id)
    except Exception as err:
        if (
            isinstance(err, PermanentError)
            or receive_count(delivery.record) >= get_settings().max_receive_count
        ):
            # Given up: the job's status says why, rather than `running` for ever.
            lifecycle.finish_failed(job_store(), job_id, str(err))
            logger.error(
                "finishing the job failed: dead-lettered", extra={**log, "error": str(err)}
            )
            dead_letter(delivery.record, str(err))
            return "dead-lettered"
        raise retry_later(delivery, err, "finishing the job failed", log) from err
    announce_finished(job_id, log)
    return "finished"


async def run_chunk(delivery: Delivery, message: ChunkMessage) -> str:
    log = {**delivery.log, "chunk_index": message.chunk_index}
    last_attempt = receive_count(delivery.record) >= get_settings().max_receive_count
    try:
        outcome = await attempt_chunk(
            job_store(),
            message.job_id,
            message.chunk_index,
            last_attempt=last_attempt,
            budget_s=deadline_s(delivery.context),
            continuation=message.continuation,
            poll=message.poll,
        )
    except PermanentError as err:  # no such job or chunk: nothing to record, keep the message
        logger.error("unknown job or chunk: dead-lettered", extra={**log, "error": str(err)})
        dead_letter(delivery.record, str(err))
        return "dead-lettered"
    except Exception as err:  # transient or rate-limited
        raise retry_later(delivery, err, "chunk attempt failed", log) from err
    logger.info(f"chunk {outcome.outcome}", extra={**log, "error": outcome.error})
    if outcome.outcome == "continued":
        more = message.model_copy(update={"continuation": message.continuation + 1})
        delivery.source.send([more])
    if outcome.outcome == "waiting":
        # On the provider's batch: looked at again by a delayed message, no Lambda waiting.
        again = message.model_copy(update={"poll": message.poll + 1})
        delivery.source.send([again], delay_s=outcome.wait_s or 0)
    if outcome.job_finished:
        chunk_queue().send([FinishMessage(job_id=message.job_id)])
    if outcome.outcome == "failed":
        report_failed(delivery, outcome.error, last_attempt)
    return outcome.outcome


async def stop_job(delivery: Delivery, message: StopMessage) -> str:
    """A cancelled job: its running chunks' provider batches cancelled, a page per message."""
    try:
        after = await lifecycle.stop_cancelled(job_store(), message.job_id, message.after)
    except Exception as err:
        raise retry_later(delivery, err, "stopping the cancelled job failed", delivery.log) from err
    if after is not None:
        delivery.source.send([StopMessage(job_id=message.job_id, after=after)])
        return "continued"
    return "stopped"


async def retry_job(delivery: Delivery, message: RetryMessage) -> str:
    """A job's retry: a page of its chunks reopened, or sent again, per message."""
    step = RetryStep(message.phase, message.after)
    try:
        page = lifecycle.retry_page(job_store(), message.job_id, message.redrive, step)
        job = job_store().get_job(message.job_id) if page.send else None
        if job is not None:
            chunks = [ChunkMessage(job_id=message.job_id, chunk_index=i) for i in page.send]
            queue_for(job.spec.priority).send(chunks)
    except Exception as err:
        raise retry_later(delivery, err, "retrying the job failed", delivery.log) from err
    if page.next is None:
        return "retried"
    after = RetryMessage(
        job_id=message.job_id, redrive=message.redrive, phase=page.next.phase, after=page.next.after
    )
    delivery.source.send([after])
    return "continued"


def announce_finished(job_id: str, log: dict[str, Any]) -> None:
    """Log the finished job's summary; a callback, if it asked for one, is its own message."""
    summary = job_store().status(job_id)
    logger.info(
        "job finished", extra={**log, "summary": summary and summary.model_dump(mode="json")}
    )
    job = job_store().get_job(job_id)
    if job is not None and job.spec.callback_url is not None:
        chunk_queue().send([CallbackMessage(job_id=job_id)])


def report_failed(delivery: Delivery, error: str | None, last: bool) -> None:
    """A failed chunk's message ends in the DLQ: now if permanent, by redrive on the last try."""
    if last:
        # Visible again at once, so the redrive policy moves it to the DLQ on the next
        # receive rather than after a whole visibility timeout.
        delivery.source.delay(delivery.record.receipt_handle, 0)
        raise RetryLater(error)
    dead_letter(delivery.record, error or "permanent failure")


async def deliver_callback(delivery: Delivery, message: CallbackMessage) -> str:
    log = delivery.log
    try:
        result = await send_job_callback(job_store(), message.job_id)
    except PermanentError as err:
        logger.error("callback refused: dead-lettered", extra={**log, "error": str(err)})
        dead_letter(delivery.record, str(err))
        return "dead-lettered"
    except Exception as err:
        raise retry_later(delivery, err, "callback failed", log) from err
    logger.info("callback", extra={**log, "result": result})
    return result


# Each kind of message and its handler, all called alike: a new kind is one entry here. Typed
# loosely (Any) because each handler takes its own kind; test_worker checks every kind has one.
Handler = Callable[[Delivery, Any], Awaitable[str]]
HANDLERS: dict[type[QueueMessage], Handler] = {
    ChunkMessage: run_chunk,
    RangeMessage: expand_range,
    PlanMessage: plan_job,
    FinishMessage: finish_job,
    CallbackMessage: deliver_callback,
    StopMessage: stop_job,
    RetryMessage: retry_job,
}


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    # Powertools hands `context` to record_handler (its lambda_context parameter).
    return async_process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
