"""Dead-lettered chunks: list them with their failure reason and receive count, or redrive them.

    python -m tools.dlq list                      # the offline emulation (make aws-local)
    python -m tools.dlq redrive [--max N]
    python -m tools.dlq list --stack-name my-stack   # a deployed stack, with your AWS credentials

Redrive reopens each chunk's failed outcome in the job table as a job's retry does
(`chunking.lifecycle.reopen`: its failed items forgotten, its answers kept), then sends the
message back to the chunk queue, then deletes it from the DLQ: the chunk runs again and its job
finishes anew.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from chunking import lifecycle
from cloud.messages import ChunkMessage, parse_message
from tools.aws_target import CloudTarget, add_target_arguments, resolve_target

HIDE_S = 60  # while one run handles a message, nobody else sees it


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: str
    job_id: str | None
    chunk_index: int | None
    reason: str
    receive_count: int


def _chunk(body: str) -> ChunkMessage | None:
    try:
        message = parse_message(body)
    except ValueError:
        return None
    return message if isinstance(message, ChunkMessage) else None


def read_dead_letters(target: CloudTarget, limit: int = 10_000) -> list[DeadLetter]:
    """Every message in the DLQ, hidden for HIDE_S while read (call `release` to show them)."""
    sqs = target.client("sqs")
    store = target.store()
    found: list[DeadLetter] = []
    while len(found) < limit:
        batch = sqs.receive_message(
            QueueUrl=target.dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=HIDE_S,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        for m in batch:
            attributes = {
                k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()
            }
            chunk = _chunk(m["Body"])
            reason, receives = attributes.get("error"), attributes.get("receive_count")
            if reason is None and chunk and store:  # moved by the redrive policy: ask the store
                record = store.chunk(chunk.job_id, chunk.chunk_index)
                if record is not None:
                    reason, receives = record.error, str(record.attempts)
            found.append(
                DeadLetter(
                    message_id=m["MessageId"],
                    receipt_handle=m["ReceiptHandle"],
                    body=m["Body"],
                    job_id=chunk.job_id if chunk else None,
                    chunk_index=chunk.chunk_index if chunk else None,
                    reason=reason or "exceeded maxReceiveCount",
                    receive_count=int(receives or m["Attributes"]["ApproximateReceiveCount"]),
                )
            )
    return found


def release(target: CloudTarget, letters: list[DeadLetter]) -> None:
    sqs = target.client("sqs")
    for letter in letters:
        sqs.change_message_visibility(
            QueueUrl=target.dlq_url, ReceiptHandle=letter.receipt_handle, VisibilityTimeout=0
        )


def redrive(target: CloudTarget, letters: list[DeadLetter]) -> int:
    """Reopen, re-enqueue, then delete each dead letter; returns how many were redriven."""
    sqs = target.client("sqs")
    store = target.store()
    for letter in letters:
        if store and letter.job_id is not None and letter.chunk_index is not None:
            lifecycle.reopen(store, letter.job_id, letter.chunk_index)
        sqs.send_message(QueueUrl=target.queue_url, MessageBody=letter.body)
        sqs.delete_message(QueueUrl=target.dlq_url, ReceiptHandle=letter.receipt_handle)
    return len(letters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["list", "redrive"])
    parser.add_argument("--max", type=int, default=10_000, help="at most this many messages")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_target_arguments(parser)
    args = parser.parse_args(argv)
    target = resolve_target(args)
    letters = read_dead_letters(target, args.max)
    console = Console()
    if args.action == "list":
        release(target, letters)
        if args.json:
            rows = [
                {k: v for k, v in letter.__dict__.items() if k != "receipt_handle"}
                for letter in letters
            ]
            print(json.dumps(rows, indent=2))
            return 0
        table = Table(title=f"{len(letters)} dead-lettered message(s) in {target.dlq_url}")
        for column in ("job_id", "chunk", "receives", "reason"):
            table.add_column(column)
        for letter in letters:
            chunk = "?" if letter.chunk_index is None else str(letter.chunk_index)
            table.add_row(letter.job_id or "?", chunk, str(letter.receive_count), letter.reason)
        console.print(table)
        return 0
    count = redrive(target, letters)
    console.print(f"redrove {count} message(s) from {target.dlq_url} to {target.queue_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
