"""The cloud path's process-wide objects (job table, queues), built once per Lambda container,
and its secrets reader (SSM), plugged into the core when any cloud handler imports this."""

from __future__ import annotations

from functools import lru_cache

from chunking import secrets
from chunking.settings import get_settings
from cloud.parameters import read_parameter
from cloud.sqs_queue import SqsQueue
from stores.dynamodb import DynamoJobStore
from workloads.llm import blobs

secrets.use_parameter_reader(read_parameter)


def _required(name: str, value: str | None) -> str:
    if not value:
        raise RuntimeError(f"{name} is not set: it comes from aws/template.yaml's Environment")
    return value


@lru_cache
def job_store() -> DynamoJobStore:
    return DynamoJobStore(_required("JOB_TABLE", get_settings().job_table))


@lru_cache
def chunk_queue() -> SqsQueue:
    return SqsQueue(_required("CHUNK_QUEUE_URL", get_settings().chunk_queue_url))


@lru_cache
def high_priority_queue() -> SqsQueue:
    return SqsQueue(_required("HIGH_PRIORITY_QUEUE_URL", get_settings().high_priority_queue_url))


def queue_for(priority: str) -> SqsQueue:
    """High-priority jobs' chunks have a queue (and worker concurrency) of their own."""
    return high_priority_queue() if priority == "high" else chunk_queue()


def queue_of(event_source_arn: str) -> SqsQueue:
    """The queue a received message came from (its ARN ends with the queue's name)."""
    name = event_source_arn.rsplit(":", 1)[-1]
    high = get_settings().high_priority_queue_url
    return high_priority_queue() if high and high.rsplit("/", 1)[-1] == name else chunk_queue()


def data_bucket() -> str:
    return _required("DATA_BUCKET", get_settings().data_bucket)


@lru_cache
def dead_letter_queue() -> SqsQueue:
    return SqsQueue(_required("CHUNK_DLQ_URL", get_settings().chunk_dlq_url))


def reset() -> None:
    """Forget the cached clients (tests, and the emulator between stacks)."""
    for cached in (job_store, chunk_queue, high_priority_queue, dead_letter_queue, blobs.s3_client):
        cached.cache_clear()
