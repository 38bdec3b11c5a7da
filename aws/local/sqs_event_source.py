"""Lambda's SQS event source for one queue and one function: the emulator's and the tests'.

It receives batches of up to BatchSize records (waiting up to MaximumBatchingWindowInSeconds to
fill one), invokes the function with the SQS event Lambda builds, deletes the records that
succeeded and leaves the ones the function reported failed (ReportBatchItemFailures) to
reappear after their visibility timeout. An invocation that fails as a whole (timed out,
crashed: `InvocationFailed`) deletes nothing. Two ways to run it:

- `start()`: poller threads (the emulator), scaled as Lambda scales them for a standard queue
  (`PollerScaling`): 5 batches at once when messages arrive, then up to 300 more a minute while
  receives keep finding messages, never past MaximumConcurrency; back down to the batches still
  in flight (at least 5) when a receive finds the queue empty;
- `poll_once()` / `drain()`: one batch at a time, in the caller's thread (the tests), with
  `fast_forward()` standing in for the visibility timeouts that would pass in real time.

Not modelled: long polling (a receive returns at once), FIFO queues, Lambda's scaling down to
2 batches on a quiet queue without MaximumConcurrency, the 1,000-batch ceiling, provisioned
pollers, and the account's concurrency limit (throttles).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from aws.local.lambda_events import Handler, lambda_context, sqs_event

SQS_MAX_BATCH = 10  # ReceiveMessage and DeleteMessageBatch take at most 10 messages a call
# Lambda's pollers for a standard queue: 5 batches at once at first, up to 300 more a minute.
INITIAL_BATCHES = 5
MORE_BATCHES_PER_MINUTE = 300


class InvocationFailed(Exception):
    """The invocation timed out, crashed or raised: none of its records is deleted."""


@dataclass(frozen=True)
class EventSourceConfig:
    """An AWS::Lambda::EventSourceMapping's settings (defaults: Lambda's, for an SQS queue)."""

    batch_size: int = 10
    batching_window_s: float = 0.0
    # Without MaximumConcurrency Lambda would scale on towards 1,000 batches, as the account's
    # concurrency allows; offline, such a mapping stays at the first 5.
    max_concurrency: int = INITIAL_BATCHES
    report_batch_item_failures: bool = True


@dataclass
class PollerScaling:
    """How many batches the pollers may process at once, as Lambda scales them for a standard
    queue: `initial` when messages are first found, then `per_minute` more a minute for as long
    as receives keep finding messages, never past `maximum` (MaximumConcurrency). A receive that
    finds the queue empty ends the ramp: the count falls back to the batches still in flight,
    and at least `initial`. Changed by the poller thread only (snapshots read it)."""

    maximum: int
    initial: int = INITIAL_BATCHES
    per_minute: float = MORE_BATCHES_PER_MINUTE
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        self._floor = min(self.initial, self.maximum)
        self._base = self._floor
        self._ramp_began: float | None = None  # None: no messages found since the last empty

    def limit(self) -> int:
        if self._ramp_began is None:
            return self._base
        grown = int((self.clock() - self._ramp_began) * self.per_minute / 60)
        return min(self.maximum, self._base + grown)

    def found_messages(self) -> None:
        if self._ramp_began is None:
            self._ramp_began = self.clock()

    def found_empty(self, in_flight: int) -> None:
        self._base = min(self.maximum, max(self._floor, in_flight))
        self._ramp_began = None


@dataclass
class PollerStats:
    invocations: int = 0
    records: int = 0
    failed_invocations: int = 0
    deleted: int = 0
    invocation_s: float = 0.0  # summed wall time of invocations, as Lambda would bill them
    in_flight_now: int = 0
    max_in_flight: int = 0
    scaled_to: int = 0  # batches the pollers may process at once now (PollerScaling)
    last_error: str | None = None


class SqsEventSource:
    """Invokes `handler` with batches from `queue_url`, with a context counting down from
    `timeout_s` (the function's Timeout)."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Handler,
        config: EventSourceConfig | None = None,
        timeout_s: float = 60,
        scaling: PollerScaling | None = None,
    ) -> None:
        self.sqs, self.queue_url, self.handler = sqs, queue_url, handler
        self.config, self.timeout_s = config or EventSourceConfig(), timeout_s
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.stats = PollerStats()
        self.failed_receipts: list[str] = []  # for fast_forward; only kept when not polling
        self._lock = threading.Lock()
        self._batch_ended = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scaling = scaling or PollerScaling(self.config.max_concurrency)
        self._batches = 0  # received and handed to an invocation, not yet ended
        self._pool: ThreadPoolExecutor | None = None

    @property
    def invocations(self) -> int:
        return self.stats.invocations

    # -- the shared core: receive a batch, invoke, delete what succeeded ----------------------

    def receive(self) -> list[dict[str, Any]]:
        """Up to BatchSize messages, waiting at most MaximumBatchingWindowInSeconds to fill."""
        deadline = time.monotonic() + self.config.batching_window_s
        messages: list[dict[str, Any]] = []
        while len(messages) < self.config.batch_size and not self._stop.is_set():
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(SQS_MAX_BATCH, self.config.batch_size - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages += got
            if not messages or time.monotonic() >= deadline:
                break
            if not got:
                time.sleep(0.05)
        return messages

    def invoke(self, messages: list[dict[str, Any]]) -> set[str]:
        """One invocation on these messages; returns the ids of the records that failed."""
        with self._lock:
            self.stats.invocations += 1
            self.stats.records += len(messages)
            self.stats.in_flight_now += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight_now)
        began = time.monotonic()
        try:
            response = self.handler(
                sqs_event(messages, self.queue_arn), lambda_context(self.timeout_s)
            )
        except InvocationFailed as err:
            # As on Lambda: a failed invocation deletes nothing; every record comes back.
            with self._lock:
                self.stats.failed_invocations += 1
                self.stats.last_error = str(err)
            failed = {m["MessageId"] for m in messages}
        else:
            failed = self._reported_failures(response)
        finally:
            with self._lock:
                self.stats.invocation_s += time.monotonic() - began
                self.stats.in_flight_now -= 1
        self._delete([m for m in messages if m["MessageId"] not in failed])
        if self._thread is None:
            self.failed_receipts += [
                m["ReceiptHandle"] for m in messages if m["MessageId"] in failed
            ]
        return failed

    def _reported_failures(self, response: Any) -> set[str]:
        if not self.config.report_batch_item_failures:
            return set()  # without ReportBatchItemFailures, a returning invocation succeeded whole
        return {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])}

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for lo in range(0, len(messages), SQS_MAX_BATCH):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages[lo : lo + SQS_MAX_BATCH])
                ],
            )
        with self._lock:
            self.stats.deleted += len(messages)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            stats = replace(self.stats, scaled_to=self.scaling.limit())
        return stats.__dict__

    # -- in the background: poller threads, scaled up to MaximumConcurrency batches at once ---

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix="invoke")
        self._thread = threading.Thread(target=self._run, daemon=True, name="sqs-poller")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        assert self._pool is not None
        while not self._stop.is_set():
            with self._batch_ended:
                if self._batches >= self.scaling.limit():
                    # Woken when a batch ends; the timeout lets the ramp's limit grow meanwhile.
                    self._batch_ended.wait(0.05)
                    continue
                self._batches += 1
            messages = self.receive()
            if not messages:
                with self._batch_ended:
                    self._batches -= 1
                    self.scaling.found_empty(self._batches)
                self._stop.wait(0.05)
                continue
            self.scaling.found_messages()
            self._pool.submit(self._invoke_in_slot, messages)

    def _invoke_in_slot(self, messages: list[dict[str, Any]]) -> None:
        try:
            self.invoke(messages)
        finally:
            with self._batch_ended:
                self._batches -= 1
                self._batch_ended.notify()

    # -- in the caller's thread: one batch at a time (tests) ---------------------------------

    def poll_once(self) -> tuple[list[dict[str, Any]], set[str]]:
        messages = self.receive()
        return (messages, self.invoke(messages)) if messages else ([], set())

    def fast_forward(self) -> None:
        """Make failed messages visible now, as if their backoff had passed."""
        for receipt in self.failed_receipts:
            # A message already moved to the DLQ by the redrive policy has no receipt here.
            with contextlib.suppress(self.sqs.exceptions.ClientError):
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=0
                )
        self.failed_receipts.clear()

    def drain(self, max_polls: int = 10_000) -> None:
        """Poll until the queue is empty, failed messages made visible again at once."""
        for _ in range(max_polls):
            messages, _ = self.poll_once()
            if not messages:
                self.fast_forward()
                if not self._has_visible_messages():
                    return
        raise AssertionError("the queue did not drain")

    def _has_visible_messages(self) -> bool:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) > 0
