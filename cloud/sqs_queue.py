"""An SQS queue of chunk messages: batched sends that never drop an entry silently."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import boto3
from pydantic import BaseModel

SEND_BATCH = 10  # the most SendMessageBatch takes
SEND_TRIES = 3
MAX_DELAY_S = 900  # SQS's longest DelaySeconds


class QueueSendError(Exception):
    """Some messages could not be enqueued, even after retrying them."""


class SqsQueue:
    def __init__(self, url: str, client: Any | None = None) -> None:
        self.url = url
        self.sqs = client or boto3.client("sqs")

    def send(
        self,
        messages: Sequence[BaseModel],
        attributes: dict[str, str] | None = None,
        delay_s: float = 0,
    ) -> None:
        """Send every message, 10 per call; entries SQS refused are retried, then raised.
        `delay_s`: delivered that much later (SQS's DelaySeconds, at most 15 minutes)."""
        extra: dict[str, Any] = (
            {
                "MessageAttributes": {
                    k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
                }
            }
            if attributes
            else {}
        )
        if delay_s > 0:
            extra["DelaySeconds"] = max(0, min(round(delay_s), MAX_DELAY_S))
        bodies = [m.model_dump_json() for m in messages]
        for lo in range(0, len(bodies), SEND_BATCH):
            self._send_batch(bodies[lo : lo + SEND_BATCH], extra)

    def send_raw(self, body: str, attributes: dict[str, str]) -> None:
        """Send one message body as it is (used to dead-letter a message with its reason)."""
        self._send_batch(
            [body],
            {
                "MessageAttributes": {
                    k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
                }
            },
        )

    def _send_batch(self, bodies: list[str], extra: dict[str, Any]) -> None:
        pending = {str(i): body for i, body in enumerate(bodies)}
        failures: list[dict[str, Any]] = []
        for _ in range(SEND_TRIES):
            response = self.sqs.send_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": i, "MessageBody": b, **extra} for i, b in pending.items()],
            )
            failures = response.get("Failed", [])
            pending = {f["Id"]: pending[f["Id"]] for f in failures if not f.get("SenderFault")}
            if not pending:
                break
        if failures:
            reasons = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in failures)
            raise QueueSendError(
                f"{len(failures)} of {len(bodies)} messages not enqueued: {reasons}"
            )

    def delay(self, receipt_handle: str, seconds: float) -> None:
        """Make a received message visible again in `seconds` (backoff, or Retry-After)."""
        self.sqs.change_message_visibility(
            QueueUrl=self.url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(round(seconds), 43_200)),
        )
