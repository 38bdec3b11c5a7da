"""The cloud path's process-wide objects (job table, queues), built once per Lambda container."""

from __future__ import annotations

from functools import lru_cache

from chunking import blobs
from chunking.dynamo_store import DynamoJobStore
from chunking.settings import get_settings
from chunking.sqs_queue import SqsQueue


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
def dead_letter_queue() -> SqsQueue:
    return SqsQueue(_required("CHUNK_DLQ_URL", get_settings().chunk_dlq_url))


def reset() -> None:
    """Forget the cached clients (tests, and the emulator between stacks)."""
    for cached in (job_store, chunk_queue, dead_letter_queue, blobs.s3_client):
        cached.cache_clear()
