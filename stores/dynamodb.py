"""DynamoDB job store: the cloud path's JobStore, one table with a job item and chunk items.

Keys: `job_id` (partition) and `sk`: "JOB"; "CHUNK#000042" per chunk; "ITEM#000042#000000420"
per kept item result; "SETTLED#000000007" per settlement, naming the chunk that settled under
that number (the progress stream reads what settled after a number without reading the rest).
Job items also carry `gsi1pk` = "JOB" so the sparse index `by_created` lists recent jobs without
scanning chunks. Every decision that could race (first outcome of a chunk and its number,
finishing the job) is a conditional write, so redeliveries and concurrent workers never count
anything twice. The decisions themselves are `stores.base`'s; this module states them in
DynamoDB's terms.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, cast

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from stores.base import BaseJobStore, Field, JobGuard, Row

JOB_SK = "JOB"
SETTLED = "SETTLED#"
LIST_INDEX = "by_created"
BATCH_GET_MAX = 100  # keys per BatchGetItem
# Tries at numbering one settlement while other settlements of the job take the next number.
NUMBERING_TRIES = 50
_ser, _de = TypeSerializer(), TypeDeserializer()


def chunk_sk(index: int) -> str:
    return f"CHUNK#{index:06d}"


def item_prefix(chunk_index: int) -> str:
    return f"ITEM#{chunk_index:06d}#"


def settled_sk(seq: int) -> str:
    return f"{SETTLED}{seq:09d}"


def _attribute(value: Any) -> dict[str, Any]:
    value = Decimal(str(value)) if isinstance(value, float) else value  # floats: not in DynamoDB
    return cast(dict[str, Any], _ser.serialize(value))


def _attributes(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _attribute(v) for k, v in item.items()}


def _values(**values: Any) -> dict[str, Any]:
    return {f":{k}": _attribute(v) for k, v in values.items()}


def _names(*expressions: str) -> dict[str, str]:
    """Every `#name` in the expressions stands for the attribute `name` (reserved or not)."""
    return {name: name[1:] for text in expressions for name in re.findall(r"#\w+", text)}


def _item(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in raw.items()}


def _condition_failed(err: ClientError) -> bool:
    return bool(err.response["Error"]["Code"] == "ConditionalCheckFailedException")


def _cancelled_by(err: ClientError) -> list[str]:
    """Why each action of a cancelled transaction failed ("None": it did not); [] otherwise."""
    if err.response["Error"]["Code"] != "TransactionCanceledException":
        return []
    return [reason.get("Code", "None") for reason in err.response.get("CancellationReasons", [])]


def _assignments(changes: Mapping[str, Field], *also: str) -> tuple[str, dict[str, Field]]:
    """Changes as an update expression (SET what has a value, REMOVE what is cleared; `also`:
    more SET clauses), and the values it names."""
    sets = [f"#{field} = :{field}" for field, value in changes.items() if value is not None]
    removes = [f"#{field}" for field, value in changes.items() if value is None]
    clauses = [f"SET {', '.join([*sets, *also])}"] if sets or also else []
    clauses += [f"REMOVE {', '.join(removes)}"] if removes else []
    return " ".join(clauses), {f: v for f, v in changes.items() if v is not None}


def _condition(guard: JobGuard) -> tuple[str, dict[str, Field]]:
    """The guard as a condition expression on the job item, and the values it names."""
    states: dict[str, Field] = {f"when{i}": state for i, state in enumerate(guard.states)}
    condition = guard.express(
        in_states=f"#state IN ({', '.join(':' + name for name in states)})",
        failed_unstarted="(#state = :when_failed AND attribute_not_exists(#started_at))",
        exists="attribute_exists(job_id)",
        all_settled="#chunks_settled >= #total_chunks",
    )
    return condition, {**states, **({"when_failed": "failed"} if guard.failed_unstarted else {})}


class DynamoJobStore(BaseJobStore):
    """JobStore on one DynamoDB table (see the module docstring for the layout)."""

    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table = table_name
        self.db = client or boto3.client("dynamodb")

    @staticmethod
    def _key(job_id: str, sk: str) -> dict[str, Any]:
        return {"job_id": {"S": job_id}, "sk": {"S": sk}}

    def _update_op(
        self, job_id: str, sk: str, expression: str, condition: str | None = None, **values: Any
    ) -> dict[str, Any]:
        """The arguments of one UpdateItem (alone, or inside a transaction)."""
        op: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._key(job_id, sk),
            "UpdateExpression": expression,
        }
        if condition:
            op["ConditionExpression"] = condition
        if values:
            op["ExpressionAttributeValues"] = _values(**values)
        if names := _names(expression, condition or ""):
            op["ExpressionAttributeNames"] = names
        return op

    @staticmethod
    def _applied(write: Callable[..., Any], **args: Any) -> bool:
        """Make a conditional write; False when its condition did not hold."""
        try:
            write(**args)
        except ClientError as err:
            if _condition_failed(err):
                return False
            raise
        return True

    def _put(self, item: Mapping[str, Any], condition: str) -> bool:
        item = _attributes(item)
        return self._applied(
            self.db.put_item, TableName=self.table, Item=item, ConditionExpression=condition
        )

    # --- reads (all consistent: a decision never rests on a stale read) ---

    def _job_row(self, job_id: str, *fields: str) -> Row | None:
        args: dict[str, Any] = {"ConsistentRead": True}
        if fields:
            args["ProjectionExpression"] = ", ".join(f"#{field}" for field in fields)
            args["ExpressionAttributeNames"] = _names(args["ProjectionExpression"])
        found = self.db.get_item(TableName=self.table, Key=self._key(job_id, JOB_SK), **args)
        return _item(found["Item"]) if "Item" in found else None

    def _recent_job_rows(self, limit: int) -> list[Row]:
        found = self.db.query(
            TableName=self.table,
            IndexName=LIST_INDEX,
            KeyConditionExpression="gsi1pk = :job",
            ExpressionAttributeValues=_values(job=JOB_SK),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [_item(raw) for raw in found["Items"]]

    def _query(self, job_id: str, sk_condition: str, **values: Any) -> list[Row]:
        """A job's rows whose sort key meets `sk_condition`, in sort-key order."""
        pages = self.db.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression=f"job_id = :job AND {sk_condition}",
            ExpressionAttributeValues=_values(job=job_id, **values),
            ConsistentRead=True,
        )
        return [_item(raw) for page in pages for raw in page["Items"]]

    def _chunk_rows(self, job_id: str) -> list[Row]:
        return self._query(job_id, "begins_with(sk, :prefix)", prefix="CHUNK#")

    def _item_rows(self, job_id: str, chunk_index: int | None) -> list[Row]:
        prefix = "ITEM#" if chunk_index is None else item_prefix(chunk_index)
        return self._query(job_id, "begins_with(sk, :prefix)", prefix=prefix)

    def _settled_rows(self, job_id: str, after_seq: int) -> list[Row]:
        # "~" sorts after every digit: the range is every settlement numbered after after_seq.
        first, last = settled_sk(after_seq + 1), SETTLED + "~"
        markers = self._query(job_id, "sk BETWEEN :first AND :last", first=first, last=last)
        indexes = dict.fromkeys(int(marker["chunk_index"]) for marker in markers)
        chunks = self._get_rows(job_id, [chunk_sk(index) for index in indexes])
        # A reopened chunk no longer holds its old number: only its current one is listed.
        settled = [row for row in chunks if row.get("seq") is not None and row["seq"] > after_seq]
        return sorted(settled, key=lambda row: int(row["seq"]))

    def _get_rows(self, job_id: str, sks: list[str]) -> list[Row]:
        """The job's rows with these sort keys (those that exist), in no particular order."""
        rows: list[Row] = []
        for start in range(0, len(sks), BATCH_GET_MAX):
            keys = [self._key(job_id, sk) for sk in sks[start : start + BATCH_GET_MAX]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for backoff_s in (0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6):
                time.sleep(backoff_s)  # only before retrying keys DynamoDB left unprocessed
                found = self.db.batch_get_item(RequestItems=request)
                rows += [_item(raw) for raw in found["Responses"].get(self.table, [])]
                if not (request := found.get("UnprocessedKeys") or {}):
                    break
            else:
                raise RuntimeError(f"job {job_id}: DynamoDB left keys unread after retries")
        return rows

    # --- conditional writes ---

    def _insert_job(self, row: Mapping[str, Field]) -> bool:
        item = {**row, "sk": JOB_SK, "gsi1pk": JOB_SK}
        return self._put(item, "attribute_not_exists(job_id)")

    def _insert_item(self, job_id: str, row: Mapping[str, Field]) -> bool:
        sk = f"{item_prefix(int(row['chunk_index'] or 0))}{int(row['item_index'] or 0):09d}"
        return self._put({"job_id": job_id, "sk": sk, **row}, "attribute_not_exists(sk)")

    def _update_job(self, job_id: str, guard: JobGuard, changes: Mapping[str, Field]) -> bool:
        expression, values = _assignments(changes)
        condition, guard_values = _condition(guard)
        op = self._update_op(job_id, JOB_SK, expression, condition, **values, **guard_values)
        return self._applied(self.db.update_item, **op)

    def begin_attempt(self, job_id: str, chunk_index: int) -> int | None:
        op = self._update_op(
            job_id, chunk_sk(chunk_index),
            "SET #state = if_not_exists(#state, :running), #chunk_index = :index"
            " ADD #attempts :one",
            "attribute_not_exists(sk) OR #state = :running",
            running="running", index=chunk_index, one=1,
        )  # fmt: skip
        try:
            found = self.db.update_item(**op, ReturnValues="UPDATED_NEW")
        except ClientError as err:
            if _condition_failed(err):
                return None  # already settled
            raise
        return int(_item(found["Attributes"])["attempts"])

    def _record_outcome(
        self, job_id: str, chunk_index: int, outcome: Mapping[str, Field], *, begun_only: bool
    ) -> bool:
        # Already settled? Refused. Never begun? Refused too when begun_only.
        may_settle = "#state = :running"
        if not begun_only:
            may_settle = f"attribute_not_exists(sk) OR {may_settle}"
        for tries in range(NUMBERING_TRIES):
            if tries:
                # Lost the number to a concurrent settlement: back off a little, jittered, so
                # settlements of one busy job do not keep colliding.
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**tries)))
            # The job's next number, taken only if no settlement took it meanwhile: numbers
            # become visible in order, so the stream never passes over a late one.
            seq = self._last_seq(job_id) + 1
            try:
                self.db.transact_write_items(
                    TransactItems=self._settlement(job_id, chunk_index, outcome, may_settle, seq)
                )
                return True
            except ClientError as err:
                chunk, job, *_ = [*_cancelled_by(err), "None", "None"]
                if chunk == "ConditionalCheckFailed":
                    return False  # settled (or never begun): refused by the chunk's condition
                if job != "ConditionalCheckFailed" and "TransactionConflict" not in (chunk, job):
                    raise  # not a race for the number
        raise RuntimeError(f"job {job_id}: chunk {chunk_index} lost {NUMBERING_TRIES} races")

    def _last_seq(self, job_id: str) -> int:
        """The job's last settlement number; raises when there is no such job."""
        row = self._job_row(job_id, "events_seq")
        if row is None:
            raise LookupError(f"job {job_id}: no such job in the job table")
        return int(row.get("events_seq") or 0)

    def _settlement(
        self, job_id: str, chunk_index: int, outcome: Mapping[str, Field], may_settle: str, seq: int
    ) -> list[dict[str, Any]]:
        """One transaction: the chunk's outcome under number `seq` (if `may_settle` holds), the
        job's count and last number (if still `seq - 1`), and the number's marker."""
        changes = {**outcome, "chunk_index": chunk_index, "seq": seq}
        expression, values = _assignments(changes, "#attempts = if_not_exists(#attempts, :zero)")
        settle = self._update_op(
            job_id, chunk_sk(chunk_index), expression, may_settle,
            **values, running="running", zero=0,
        )  # fmt: skip
        count = self._update_op(
            job_id, JOB_SK,
            "SET #events_seq = :seq ADD #chunks_settled :one",
            "attribute_exists(job_id)"
            " AND (attribute_not_exists(#events_seq) OR #events_seq = :last)",
            seq=seq, one=1, last=seq - 1,
        )  # fmt: skip
        marker = {"job_id": job_id, "sk": settled_sk(seq), "chunk_index": chunk_index}
        put = {"TableName": self.table, "Item": _attributes(marker)}
        return [{"Update": settle}, {"Update": count}, {"Put": put}]

    def reopen_chunk(self, job_id: str, chunk_index: int) -> bool:
        try:
            self.db.transact_write_items(
                TransactItems=[
                    {"Update": self._update_op(
                        job_id, chunk_sk(chunk_index),
                        "SET #state = :running REMOVE #error, #latency_ms, #seq",
                        "#state = :failed",
                        running="running", failed="failed",
                    )},
                    {"Update": self._update_op(
                        job_id, JOB_SK,
                        "ADD #chunks_settled :minus REMOVE #finished_at, #settled_by, #output_uri",
                        minus=-1,
                    )},
                ]
            )  # fmt: skip
        except ClientError as err:
            if err.response["Error"]["Code"] == "TransactionCanceledException":
                return False
            raise
        # A finished job runs again; one that failed to start, or was cancelled, stays so.
        self._update_job(job_id, JobGuard(states=("finished",)), {"state": "running"})
        return True
