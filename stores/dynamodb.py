"""DynamoDB job store: the cloud path's JobStore, one table with a job item and chunk items.

Keys: `job_id` (partition) and `sk` ("JOB", or "CHUNK#000042" per chunk). Job items also carry
`gsi1pk` = "JOB" so the sparse index `by_created` lists recent jobs without scanning chunks.
Every decision that could race (first outcome of a chunk, finishing the job) is a conditional
write, so redeliveries and concurrent workers never count anything twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import (
    ChunkRecord,
    ItemResult,
    JobRecord,
    JobStatus,
    Path,
    build_status,
    usage_from,
)
from chunking.store import JobConflictError, Settlement

JOB_SK = "JOB"
LIST_INDEX = "by_created"
_ser, _de = TypeSerializer(), TypeDeserializer()


def chunk_sk(index: int) -> str:
    return f"CHUNK#{index:06d}"


def item_prefix(chunk_index: int) -> str:
    return f"ITEM#{chunk_index:06d}#"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _values(**values: Any) -> dict[str, Any]:
    return {f":{k}": _ser.serialize(v) for k, v in values.items()}


def _item(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in raw.items()}


def _condition_failed(err: ClientError) -> bool:
    return bool(err.response["Error"]["Code"] == "ConditionalCheckFailedException")


# Names that DynamoDB reserves, always written through placeholders.
NAMES = {"#state": "state", "#error": "error", "#items": "items"}


class DynamoJobStore:
    """JobStore on one DynamoDB table (see the module docstring for the layout)."""

    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table = table_name
        self.db = client or boto3.client("dynamodb")

    def _update_op(
        self, job_id: str, sk: str, expression: str, condition: str | None = None, **values: Any
    ) -> dict[str, Any]:
        """The arguments of one UpdateItem (alone, or inside a transaction)."""
        text = expression + (condition or "")
        names = {k: v for k, v in NAMES.items() if k in text}
        op: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"job_id": {"S": job_id}, "sk": {"S": sk}},
            "UpdateExpression": expression,
        }
        if condition:
            op["ConditionExpression"] = condition
        if values:
            op["ExpressionAttributeValues"] = _values(**values)
        if names:
            op["ExpressionAttributeNames"] = names
        return op

    def _transact(self, *updates: dict[str, Any]) -> None:
        """UpdateItems that all happen or none does."""
        self.db.transact_write_items(TransactItems=[{"Update": op} for op in updates])

    def _update(self, job_id: str, sk: str, expression: str, condition: str, **values: Any) -> bool:
        """A conditional UpdateItem; False when the condition did not hold."""
        try:
            self.db.update_item(**self._update_op(job_id, sk, expression, condition, **values))
        except ClientError as err:
            if _condition_failed(err):
                return False
            raise
        return True

    @staticmethod
    def _job(item: dict[str, Any]) -> JobRecord:
        settled_by = item.get("settled_by")
        return JobRecord(
            job_id=item["job_id"],
            path=item["path"],
            spec=JobSpec.model_validate_json(item["spec"]),
            state=item["state"],
            total_chunks=int(item["total_chunks"]),
            created_at=datetime.fromisoformat(item["created_at"]),
            started_at=_ts(item.get("started_at")),
            finished_at=_ts(item.get("finished_at")),
            error=item.get("error"),
            settled_by=None if settled_by is None else int(settled_by),
            output_uri=item.get("output_uri"),
        )

    def create_job(self, job_id: str, spec: JobSpec, path: Path) -> tuple[JobRecord, bool]:
        spec_json = spec.model_copy(update={"job_id": job_id}).model_dump_json()
        item = {
            "job_id": job_id, "sk": JOB_SK, "gsi1pk": JOB_SK, "path": path, "spec": spec_json,
            "state": "queued", "total_chunks": spec.total_chunks, "chunks_settled": 0,
            "created_at": _now(),
        }  # fmt: skip
        try:
            self.db.put_item(
                TableName=self.table,
                Item={k: _ser.serialize(v) for k, v in item.items()},
                ConditionExpression="attribute_not_exists(job_id)",
            )
            return self._job(item), True
        except ClientError as err:
            if not _condition_failed(err):
                raise
        job = self.get_job(job_id)
        assert job is not None  # the condition failed because it exists
        if job.spec.model_dump_json() != spec_json or job.path != path:
            raise JobConflictError(
                f"job_id {job_id!r} is already used by a different job; choose another job_id"
            )
        return job, False

    def get_job(self, job_id: str) -> JobRecord | None:
        found = self.db.get_item(
            TableName=self.table,
            Key={"job_id": {"S": job_id}, "sk": {"S": JOB_SK}},
            ConsistentRead=True,
        )
        return self._job(_item(found["Item"])) if "Item" in found else None

    def list_jobs(self, limit: int) -> list[JobRecord]:
        found = self.db.query(
            TableName=self.table,
            IndexName=LIST_INDEX,
            KeyConditionExpression="gsi1pk = :job",
            ExpressionAttributeValues=_values(job=JOB_SK),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [self._job(_item(raw)) for raw in found["Items"]]

    def start_job(self, job_id: str) -> bool:
        return self._update(
            job_id, JOB_SK,
            "SET #state = :running, started_at = :now REMOVE #error",
            "#state = :queued OR (#state = :failed AND attribute_not_exists(started_at))",
            running="running", now=_now(), queued="queued", failed="failed",
        )  # fmt: skip

    def fail_job(self, job_id: str, error: str) -> None:
        # started_at is removed: the job never properly started, so it may be requeued.
        self._update(
            job_id, JOB_SK,
            "SET #state = :failed, #error = :error, finished_at = :now REMOVE started_at",
            "#state IN (:queued, :running)",
            failed="failed", error=error, now=_now(), queued="queued", running="running",
        )  # fmt: skip

    def cancel_job(self, job_id: str) -> bool:
        return self._update(
            job_id, JOB_SK,
            "SET #state = :cancelled, finished_at = :now",
            "#state IN (:queued, :running)",
            cancelled="cancelled", now=_now(), queued="queued", running="running",
        )  # fmt: skip

    def requeue_job(self, job_id: str) -> bool:
        return self._update(
            job_id, JOB_SK,
            "SET #state = :queued REMOVE #error, finished_at",
            "#state = :failed AND attribute_not_exists(started_at)",
            queued="queued", failed="failed",
        )  # fmt: skip

    def begin_attempt(self, job_id: str, chunk_index: int) -> int | None:
        try:
            found = self.db.update_item(
                TableName=self.table,
                Key={"job_id": {"S": job_id}, "sk": {"S": chunk_sk(chunk_index)}},
                UpdateExpression=(
                    "SET #state = if_not_exists(#state, :running), chunk_index = :index "
                    "ADD attempts :one"
                ),
                ConditionExpression="attribute_not_exists(sk) OR #state = :running",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=_values(running="running", index=chunk_index, one=1),
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as err:
            if _condition_failed(err):
                return None  # already settled
            raise
        return int(_item(found["Attributes"])["attempts"])

    def settle_chunk(
        self,
        job_id: str,
        chunk_index: int,
        *,
        succeeded: bool,
        items: int = 0,
        latency_ms: float | None = None,
        error: str | None = None,
        begun_only: bool = False,
    ) -> Settlement:
        job_key = {"job_id": {"S": job_id}, "sk": {"S": JOB_SK}}
        try:
            # The chunk's first outcome and the job's counter move together or not at all.
            self._transact(
                self._update_op(
                    job_id,
                    chunk_sk(chunk_index),
                    "SET #state = :state, #items = :items, latency_ms = :latency, "
                    "#error = :error, chunk_index = :index, "
                    "attempts = if_not_exists(attempts, :zero)",
                    "#state = :running"
                    if begun_only
                    else "attribute_not_exists(sk) OR #state = :running",
                    state="succeeded" if succeeded else "failed",
                    items=items if succeeded else 0,
                    latency=None if latency_ms is None else Decimal(str(latency_ms)),
                    error=error,
                    index=chunk_index,
                    zero=0,
                    running="running",
                ),
                self._update_op(
                    job_id,
                    JOB_SK,
                    "ADD chunks_settled :one",
                    "attribute_exists(job_id)",
                    one=1,
                ),
            )
            recorded = True
        except ClientError as err:
            reasons = err.response.get("CancellationReasons", [])
            if err.response["Error"]["Code"] != "TransactionCanceledException" or not reasons:
                raise
            if reasons[0].get("Code") != "ConditionalCheckFailed":
                raise  # not a duplicate: e.g. the job does not exist
            recorded = False
        # One read tells whether the job may finish now. Tried on duplicates too: a job
        # restarted after its chunks settled still finishes.
        found = self.db.get_item(
            TableName=self.table,
            Key=job_key,
            ConsistentRead=True,
            ProjectionExpression="#state, chunks_settled, total_chunks, settled_by",
            ExpressionAttributeNames={"#state": "state"},
        ).get("Item")
        job = _item(found) if found else {}
        if job.get("state") == "running" and job["chunks_settled"] >= job["total_chunks"]:
            finished = self._update(
                job_id, JOB_SK,
                "SET #state = :finished, finished_at = :now, settled_by = :index",
                "#state = :running AND chunks_settled >= total_chunks",
                finished="finished", now=_now(), index=chunk_index, running="running",
            )  # fmt: skip
            if finished:
                return Settlement(recorded=recorded, job_finished=True)
            job = _item(
                self.db.get_item(TableName=self.table, Key=job_key, ConsistentRead=True)["Item"]
            )
        settled_by = job.get("settled_by")
        finished = settled_by is not None and int(settled_by) == chunk_index
        return Settlement(recorded=recorded, job_finished=finished)

    def reopen_chunk(self, job_id: str, chunk_index: int) -> bool:
        try:
            self._transact(
                self._update_op(
                    job_id,
                    chunk_sk(chunk_index),
                    "SET #state = :running REMOVE #error, latency_ms",
                    "#state = :failed",
                    running="running",
                    failed="failed",
                ),
                self._update_op(
                    job_id,
                    JOB_SK,
                    "ADD chunks_settled :minus REMOVE finished_at, settled_by, output_uri",
                    minus=-1,
                ),
            )
        except ClientError as err:
            if err.response["Error"]["Code"] == "TransactionCanceledException":
                return False
            raise
        # A finished job runs again; one that failed to start, or was cancelled, stays so.
        self._update(
            job_id, JOB_SK,
            "SET #state = :running",
            "#state = :finished",
            running="running", finished="finished",
        )  # fmt: skip
        return True

    def set_output_uri(self, job_id: str, uri: str) -> None:
        self._update(job_id, JOB_SK, "SET output_uri = :uri", "attribute_exists(job_id)", uri=uri)

    def record_item(self, job_id: str, result: ItemResult) -> bool:
        item = {
            "job_id": job_id, "sk": f"{item_prefix(result.chunk_index)}{result.index:09d}",
            "item_index": result.index, "chunk_index": result.chunk_index, "id": result.id,
            "output": result.output, "error": result.error,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "latency_ms": None if result.latency_ms is None else Decimal(str(result.latency_ms)),
        }  # fmt: skip
        try:
            self.db.put_item(
                TableName=self.table,
                Item={k: _ser.serialize(v) for k, v in item.items()},
                ConditionExpression="attribute_not_exists(sk)",
            )
        except ClientError as err:
            if _condition_failed(err):
                return False
            raise
        return True

    def _rows(self, job_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        """A job's rows whose sort key starts with `prefix`, in sort-key order."""
        for page in self.db.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression="job_id = :job AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=_values(job=job_id, prefix=prefix),
            ConsistentRead=True,
        ):
            yield from (_item(raw) for raw in page["Items"])

    def item_results(self, job_id: str, chunk_index: int) -> list[ItemResult]:
        return self._items(job_id, item_prefix(chunk_index))

    def _items(self, job_id: str, prefix: str) -> list[ItemResult]:
        results = []
        for item in self._rows(job_id, prefix):
            latency = item.get("latency_ms")
            results.append(
                ItemResult(
                    index=int(item["item_index"]), chunk_index=int(item["chunk_index"]),
                    id=item["id"], output=item.get("output"), error=item.get("error"),
                    prompt_tokens=int(item["prompt_tokens"]),
                    completion_tokens=int(item["completion_tokens"]),
                    latency_ms=None if latency is None else float(latency),
                )
            )  # fmt: skip
        return results

    def chunks(self, job_id: str) -> list[ChunkRecord]:
        records = []
        for item in self._rows(job_id, "CHUNK#"):
            latency = item.get("latency_ms")
            records.append(
                ChunkRecord(
                    index=int(item["chunk_index"]),
                    state=item["state"],
                    attempts=int(item.get("attempts", 0)),
                    items=int(item.get("items", 0)),
                    latency_ms=None if latency is None else float(latency),
                    error=item.get("error"),
                )
            )
        return records

    def status(self, job_id: str) -> JobStatus | None:
        job = self.get_job(job_id)
        if job is None:
            return None
        usage = usage_from(self._items(job_id, "ITEM#"), get_settings().llm_prices)
        return build_status(job, self.chunks(job_id), datetime.now(UTC), usage)
