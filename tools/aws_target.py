"""Which cloud stack a tool talks to: the offline emulation by default, or a deployed stack."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

import boto3

from aws.local.resources import NAMES
from stores.dynamodb import DynamoJobStore

EMULATOR_ENDPOINT = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class CloudTarget:
    queue_url: str
    dlq_url: str
    table_name: str | None
    endpoint_url: str | None  # None: real AWS
    bucket_name: str | None = None  # the stack's data bucket (llm inputs and outputs)

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint_url)

    def store(self) -> DynamoJobStore | None:
        return DynamoJobStore(self.table_name, self.client("dynamodb")) if self.table_name else None


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("which stack (default: the offline emulation on :5000)")
    group.add_argument("--stack-name", help="a deployed stack: queues and table from its outputs")
    group.add_argument("--endpoint-url", help=f"AWS endpoint (emulation: {EMULATOR_ENDPOINT})")


def resolve_target(args: argparse.Namespace) -> CloudTarget:
    if args.stack_name:
        cfn = boto3.client("cloudformation", endpoint_url=args.endpoint_url)
        [stack] = cfn.describe_stacks(StackName=args.stack_name)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        return CloudTarget(
            outputs["ChunkQueueUrl"],
            outputs["ChunkDeadLetterQueueUrl"],
            outputs.get("JobTableName"),
            args.endpoint_url,
            outputs.get("DataBucketName"),
        )
    endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or EMULATOR_ENDPOINT
    if endpoint == EMULATOR_ENDPOINT:
        # The emulator accepts any credentials; don't make users configure some.
        for name, value in {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            os.environ.setdefault(name, value)
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    return CloudTarget(
        sqs.get_queue_url(QueueName=NAMES["ChunkQueue"])["QueueUrl"],
        sqs.get_queue_url(QueueName=NAMES["ChunkDeadLetterQueue"])["QueueUrl"],
        NAMES["JobTable"],
        endpoint,
        NAMES["DataBucket"],
    )
