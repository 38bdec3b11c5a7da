"""Benchmark: POST /start latency for a 500-item job vs a 10,000,000-item job, against moto.

The starter must accept large jobs in about constant time (range messages expanded by the
workers), so the target is median(10M) / median(500) <= 2.

    .venv/bin/python -m bench.starter_latency [--runs 21]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import boto3
from moto import mock_aws

from aws.local.resources import create_resources

SIZES = {"500 items / 50": (500, 50), "10,000,000 items / 100": (10_000_000, 100)}


def empty(sqs: Any, url: str) -> None:
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    os.environ.update(
        {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    with mock_aws():
        sqs = boto3.client("sqs")
        stack = create_resources(boto3.client("dynamodb"), sqs)
        os.environ.update(stack.environment())
        from aws.local.lambda_events import lambda_context, post_start
        from aws.starter.app import lambda_handler

        medians = {}
        for label, (total, size) in SIZES.items():
            timings = []
            for _ in range(args.runs + 1):  # the first run warms imports and clients
                # An empty queue each run: measure the starter, not moto's growing queue.
                empty(sqs, stack.queue_url)
                event = post_start({"total_items": total, "chunk_size": size})
                started = time.perf_counter()
                response = lambda_handler(event, lambda_context())
                timings.append((time.perf_counter() - started) * 1000)
                assert response["statusCode"] == 202, response["body"]
                chunks = json.loads(response["body"])["chunks_created"]
            medians[label] = statistics.median(timings[1:])
            low, high = min(timings[1:]), max(timings[1:])
            print(
                f"{label:>24}: {chunks:>7} chunks, median {medians[label]:6.2f} ms "
                f"(min {low:.2f}, max {high:.2f}, n={args.runs})"
            )
        small, large = medians.values()
        print(f"{'ratio large / small':>24}: {large / small:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
