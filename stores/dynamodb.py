"""DynamoDB job store: the cloud path's JobStore, one table with a job item and chunk items.

Keys: `job_id` (partition) and `sk`: "JOB"; "CHUNK#000042" per chunk; "ITEM#000042#000000420"
per kept item result; "SETTLED#000000007" per settlement, naming the chunk that settled under
that number (the progress stream reads what settled after a number without reading the rest).
Job items also carry `gsi1pk` = "JOB" so the sparse index `by_created` lists recent jobs without
scanning chunks; chunk items carry `chunk_state` = "failed#000042" so the sparse index
`by_state` pages through a job's chunks in one state without reading the others; a running job
carries `active_at` (removed when it ends), so the sparse index `by_activity` (keys only) lists
the running jobs idle longest for the sweep of stalled jobs. A claim
(`claim_once`) is an item of its own, `job_id` = "CLAIM#<key>", `sk` = "CLAIM", with `expires`
(epoch seconds), the table's TTL attribute. A shared budget (`take_lease`) is one too:
`job_id` = "BUDGET#<name>", `sk` = "BUDGET", its `state` written under its `version`.

Every decision that could race (a chunk's attempt, its outcome and number, the job's tally,
finishing the job) is one conditional write or transaction: what it changes was read, and the
write applies only if that is still so (the chunk's state and attempts, the job's `version`);
otherwise it reads again. Redeliveries and concurrent workers never count anything twice. The
decisions themselves are `stores.base`'s; this module states them in DynamoDB's terms.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from chunking.status import ChunkState
from chunking.store import JobNotRunningError, Settlement
from stores.base import (
    ACTIVE_AT,
    ENDED,
    REOPENED_CHUNK,
    TALLY_FIELDS,
    BaseJobStore,
    Field,
    JobGuard,
    Row,
    reopen_change,
    reopenable,
)

# What a settlement or a reopen reads of the job's row and the chunk's.
TALLY_READ = tuple(
    dict.fromkeys(
        ("sk", "chunk_index", "attempts", "items", "latency_ms", "timeline", *TALLY_FIELDS)
    )
)

# What a guarded write's plan gives: the transaction (none: nothing to write) and its result.
Planned = tuple[list[dict[str, Any]], Any]

JOB_SK = "JOB"
CHUNK = "CHUNK#"
SETTLED = "SETTLED#"
CLAIM, CLAIM_SK = "CLAIM#", "CLAIM"  # claim_once's items: keyed apart from every job
BUDGET, BUDGET_SK = "BUDGET#", "BUDGET"  # take_lease's items, one per shared budget
CLAIM_TTL_ATTRIBUTE = "expires"  # the table's TTL attribute (template.yaml): claims only
LIST_INDEX = "by_created"
TENANT_INDEX = "by_tenant"
STATE_INDEX = "by_state"
ACTIVITY_INDEX = "by_activity"
BATCH_GET_MAX = 100  # keys per BatchGetItem
# Tries at one guarded write while other writers change what it read (the job's tally).
WRITE_TRIES = 50
# Why a transaction may be cancelled when another writer got there first: read and try again.
RACES = frozenset({"None", "ConditionalCheckFailed", "TransactionConflict"})
_ser, _de = TypeSerializer(), TypeDeserializer()


def chunk_sk(index: int) -> str:
    return f"{CHUNK}{index:06d}"


def state_key(state: str, index: int) -> str:
    """The chunk's key in the `by_state` index."""
    return f"{state}#{index:06d}"


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


TRANSACT_MAX_ITEMS = 100  # DynamoDB's most actions in one transaction
TRANSACT_MAX_BYTES = 3 * 2**20  # of its 4 MB, with room for the request's own keys and names


def _transactable(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The items in groups one transaction takes (by count and, roughly, by size)."""
    group: list[dict[str, Any]] = []
    size = 0
    for item in items:
        bytes_ = sum(len(str(k)) + len(str(v)) for k, v in item.items())
        if group and (len(group) == TRANSACT_MAX_ITEMS or size + bytes_ > TRANSACT_MAX_BYTES):
            yield group
            group, size = [], 0
        group.append(item)
        size += bytes_
    if group:
        yield group


def _cancelled_by(err: ClientError) -> list[str]:
    """Why each action of a cancelled transaction failed ("None": it did not); [] otherwise."""
    if err.response["Error"]["Code"] != "TransactionCanceledException":
        return []
    return [reason.get("Code", "None") for reason in err.response.get("CancellationReasons", [])]


def _assignments(
    changes: Mapping[str, Field], *also: str, add: Mapping[str, int] | None = None
) -> tuple[str, dict[str, Field]]:
    """Changes as an update expression (SET what has a value, REMOVE what is cleared; `also`:
    more SET clauses; `add`: counters added to), and the values it names."""
    sets = [f"#{field} = :{field}" for field, value in changes.items() if value is not None]
    removes = [f"#{field}" for field, value in changes.items() if value is None]
    adds = {f"add_{field}": n for field, n in (add or {}).items() if n}
    clauses = [f"SET {', '.join([*sets, *also])}"] if sets or also else []
    clauses += [f"REMOVE {', '.join(removes)}"] if removes else []
    clauses += [f"ADD {', '.join(f'#{name[4:]} :{name}' for name in adds)}"] if adds else []
    return " ".join(clauses), {**{f: v for f, v in changes.items() if v is not None}, **adds}


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

    def claim_once(self, key: str, now: float, ttl_s: float) -> bool:
        # An item of its own, kept until `expires` (epoch seconds: the table's TTL attribute,
        # so DynamoDB deletes it some time after; the condition does not wait for that).
        item = {
            "job_id": f"{CLAIM}{key}",
            "sk": CLAIM_SK,
            CLAIM_TTL_ATTRIBUTE: math.ceil(now + ttl_s),
        }
        return self._applied(
            self.db.put_item,
            TableName=self.table,
            Item=_attributes(item),
            ConditionExpression="attribute_not_exists(job_id) OR #expires < :now",
            ExpressionAttributeNames={"#expires": CLAIM_TTL_ATTRIBUTE},
            ExpressionAttributeValues=_values(now=math.floor(now)),
        )

    def _put_budget(self, name: str, state: str, version: int) -> bool:
        item = {
            "job_id": f"{BUDGET}{name}",
            "sk": BUDGET_SK,
            "state": state,
            "version": version + 1,
        }
        args: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(job_id)"}
        if version:
            args = {
                "ConditionExpression": "#version = :seen",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": _values(seen=version),
            }
        return self._applied(self.db.put_item, TableName=self.table, Item=_attributes(item), **args)

    def _chunk_batch_row(self, job_id: str, chunk_index: int) -> tuple[str | None, int]:
        found = self.db.get_item(
            TableName=self.table,
            Key=self._key(job_id, chunk_sk(chunk_index)),
            ConsistentRead=True,
            ProjectionExpression="#batch, #batch_version",
            ExpressionAttributeNames={"#batch": "batch", "#batch_version": "batch_version"},
        ).get("Item")
        row = _item(found) if found else {}
        return row.get("batch"), int(row.get("batch_version") or 0)

    def _put_chunk_batch(self, job_id: str, chunk_index: int, state: str, version: int) -> bool:
        seen = "attribute_not_exists(#batch_version)" if not version else "#batch_version = :seen"
        return self._applied(
            self.db.update_item,
            TableName=self.table,
            Key=self._key(job_id, chunk_sk(chunk_index)),
            UpdateExpression="SET #batch = :state, #batch_version = :next",
            ConditionExpression=f"#state = :running AND {seen}",
            ExpressionAttributeNames={
                "#batch": "batch",
                "#batch_version": "batch_version",
                "#state": "state",
            },
            ExpressionAttributeValues=_values(
                state=state,
                next=version + 1,
                running="running",
                **({"seen": version} if version else {}),
            ),
        )

    def _budget_row(self, name: str) -> tuple[str | None, int]:
        found = self.db.get_item(
            TableName=self.table, Key=self._key(f"{BUDGET}{name}", BUDGET_SK), ConsistentRead=True
        ).get("Item")
        if not found:
            return None, 0
        row = _item(found)
        return str(row["state"]), int(row["version"])

    # --- reads (all consistent: a decision never rests on a stale read) ---

    def _job_row(self, job_id: str, *fields: str) -> Row | None:
        args: dict[str, Any] = {"ConsistentRead": True}
        if fields:
            args["ProjectionExpression"] = ", ".join(f"#{field}" for field in fields)
            args["ExpressionAttributeNames"] = _names(args["ProjectionExpression"])
        found = self.db.get_item(TableName=self.table, Key=self._key(job_id, JOB_SK), **args)
        return _item(found["Item"]) if "Item" in found else None

    def _recent_job_rows(self, limit: int, tenant: str | None) -> list[Row]:
        index, key = (LIST_INDEX, "gsi1pk") if tenant is None else (TENANT_INDEX, "tenant")
        found = self.db.query(
            TableName=self.table,
            IndexName=index,
            KeyConditionExpression=f"{key} = :key",
            ExpressionAttributeValues=_values(key=JOB_SK if tenant is None else tenant),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [_item(raw) for raw in found["Items"]]

    def _stalled_job_rows(self, active_before: str, limit: int) -> list[Row]:
        # The index holds keys only (a job's `active_at` changes at most once a minute, so it
        # costs little to keep): each job found is read whole, consistently, after.
        found = self.db.query(
            TableName=self.table,
            IndexName=ACTIVITY_INDEX,
            KeyConditionExpression="gsi1pk = :job AND active_at < :before",
            ExpressionAttributeValues=_values(job=JOB_SK, before=active_before),
            Limit=limit,
        )
        rows = [self._job_row(_item(raw)["job_id"]) for raw in found["Items"]]
        for row in rows:
            if row is not None and row.get("state") != "running":
                # A chunk that settled after its job was cancelled marked it active again:
                # it leaves the index, so it never stands in a running job's place.
                self._update_job(row["job_id"], ENDED, {ACTIVE_AT: None})
        return [row for row in rows if row is not None and row.get("state") == "running"]

    def _query(self, job_id: str, sk_condition: str, **values: Any) -> list[Row]:
        """A job's rows whose sort key meets `sk_condition`, in sort-key order."""
        pages = self.db.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression=f"job_id = :job AND {sk_condition}",
            ExpressionAttributeValues=_values(job=job_id, **values),
            ConsistentRead=True,
        )
        return [_item(raw) for page in pages for raw in page["Items"]]

    def _chunk_rows(
        self, job_id: str, state: ChunkState | None, after: int, limit: int
    ) -> list[Row]:
        # "~" sorts after every digit: the range is every chunk (in `state`) after `after`.
        args: dict[str, Any] = {"TableName": self.table, "Limit": limit}
        if state is None:
            first, last, key = chunk_sk(after + 1), CHUNK + "~", "sk"
            args["ConsistentRead"] = True
        else:
            # A global index is eventually consistent: a page may lag a settlement by moments.
            first, last, key = state_key(state, after + 1), f"{state}#~", "chunk_state"
            args["IndexName"] = STATE_INDEX
        found = self.db.query(
            **args,
            KeyConditionExpression=f"job_id = :job AND {key} BETWEEN :first AND :last",
            ExpressionAttributeValues=_values(job=job_id, first=first, last=last),
        )
        return [_item(raw) for raw in found["Items"]]

    def _item_rows(self, job_id: str, chunk_index: int) -> list[Row]:
        return self._query(job_id, "begins_with(sk, :prefix)", prefix=item_prefix(chunk_index))

    def _settled_rows(self, job_id: str, after_seq: int, limit: int) -> list[Row]:
        # Markers in number order, a query page at a time until `limit` chunks are found: a
        # chunk reopened and settled again keeps only its latest marker current, so an older
        # one is skipped (its chunk comes at its new number), never listed out of order.
        # "~" sorts after every digit: the range is every settlement numbered after after_seq.
        args: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": True,
            "KeyConditionExpression": "job_id = :job AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": _values(
                job=job_id, first=settled_sk(after_seq + 1), last=SETTLED + "~"
            ),
        }
        settled: list[Row] = []
        while len(settled) < limit:
            found = self.db.query(**args, Limit=limit - len(settled))
            numbers = {
                int(marker["chunk_index"]): int(marker["sk"].removeprefix(SETTLED))
                for marker in map(_item, found["Items"])
            }
            rows = self._get_rows(job_id, [chunk_sk(index) for index in numbers])
            current = [row for row in rows if row.get("seq") == numbers[int(row["chunk_index"])]]
            settled += sorted(current, key=lambda row: int(row["seq"]))
            if "LastEvaluatedKey" not in found:
                break
            args["ExclusiveStartKey"] = found["LastEvaluatedKey"]
        return settled

    def _get_rows(self, job_id: str, sks: list[str], fields: tuple[str, ...] = ()) -> list[Row]:
        """The job's rows with these sort keys (those that exist; only `fields`, when named),
        in no particular order."""
        rows: list[Row] = []
        projection: dict[str, Any] = {}
        if fields:
            expression = ", ".join(f"#{field}" for field in fields)
            projection = {
                "ProjectionExpression": expression,
                "ExpressionAttributeNames": _names(expression),
            }
        for start in range(0, len(sks), BATCH_GET_MAX):
            keys = [self._key(job_id, sk) for sk in sks[start : start + BATCH_GET_MAX]]
            request: dict[str, Any] = {
                self.table: {"Keys": keys, "ConsistentRead": True, **projection}
            }
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

    def _insert_items(self, job_id: str, rows: Sequence[Mapping[str, Field]]) -> list[bool]:
        items = [
            {"job_id": job_id, "sk": f"{item_prefix(int(row['chunk_index'] or 0))}"
             f"{int(row['item_index'] or 0):09d}", **row}
            for row in rows
        ]  # fmt: skip
        kept: list[bool] = []
        for group in _transactable(items):
            kept += self._put_new(group)
        return kept

    def _put_new(self, items: list[dict[str, Any]]) -> list[bool]:
        """Put the items that do not exist yet: one transaction when none does (the usual
        case), else one conditional put each (the transaction says only that one existed)."""
        condition = "attribute_not_exists(sk)"
        if len(items) > 1:
            puts = [
                {"Put": {"TableName": self.table, "Item": _attributes(item),
                         "ConditionExpression": condition}}
                for item in items
            ]  # fmt: skip
            try:
                self.db.transact_write_items(TransactItems=puts)
                return [True] * len(items)
            except ClientError as err:
                if not _cancelled_by(err):
                    raise
        return [self._put(item, condition) for item in items]

    def _update_job(self, job_id: str, guard: JobGuard, changes: Mapping[str, Field]) -> bool:
        expression, values = _assignments(changes)
        condition, guard_values = _condition(guard)
        op = self._update_op(job_id, JOB_SK, expression, condition, **values, **guard_values)
        return self._applied(self.db.update_item, **op)

    def _transact_until_applied(
        self,
        job_id: str,
        what: str,
        plan: Callable[[], Planned],
        refused: Callable[[list[str]], Exception | None] = lambda _: None,
    ) -> Any:
        """Read, decide and write (`plan`: the transaction and its result, or no transaction
        and the result); when another writer changed what was read, read again. `refused`
        names a cancellation that is an answer, not a race (raised as it says)."""
        for tries in range(WRITE_TRIES):
            if tries:
                # Back off a little, jittered, so the writers of one busy job stop colliding.
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**tries)))
            items, result = plan()
            if not items:
                return result
            try:
                self.db.transact_write_items(TransactItems=items)
                return result
            except ClientError as err:
                reasons = _cancelled_by(err)
                if answer := refused(reasons):
                    raise answer from err
                if not reasons or not set(reasons) <= RACES:
                    raise
        raise RuntimeError(f"job {job_id}: {what} lost {WRITE_TRIES} races to other writers")

    def _rows(self, job_id: str, chunk_index: int) -> tuple[Row, Row | None]:
        """The job's tally and the chunk's row, read together (consistently); not the job's
        spec, which may be far bigger than what a write needs (reads are billed by size).
        Raises LookupError when there is no such job."""
        keys = [JOB_SK, chunk_sk(chunk_index)]
        found = {row["sk"]: row for row in self._get_rows(job_id, keys, TALLY_READ)}
        if JOB_SK not in found:
            raise LookupError(f"job {job_id}: no such job in the job table")
        return found[JOB_SK], found.get(chunk_sk(chunk_index))

    def _job_update(
        self, job_id: str, job: Row, add: Mapping[str, int], put: Mapping[str, Field] | None = None
    ) -> dict[str, Any]:
        """The job's tally changed, if its version and its state are still the ones read (a
        cancel changes the state alone: a settlement decided on `running` must not apply)."""
        expression, values = _assignments(put or {}, add=add)
        condition = "#version = :read_version"
        version = int(job.get("version") or 0)
        if version == 0:
            condition = f"attribute_not_exists(#version) OR {condition}"
        condition = f"({condition}) AND #state = :read_state"
        return self._update_op(
            job_id,
            JOB_SK,
            expression,
            condition,
            **values,
            read_version=version,
            read_state=job["state"],
        )

    def _take_headroom(self, job_id: str, nano: int) -> bool:
        op = self._update_op(
            job_id, JOB_SK, "ADD #headroom_nano :minus", "#headroom_nano >= :nano",
            minus=-nano, nano=nano,
        )  # fmt: skip
        return self._applied(self.db.update_item, **op)

    def _delete_failed_items(self, job_id: str, chunk_index: int) -> int:
        rows = self._item_rows(job_id, chunk_index)
        failed = [row["sk"] for row in rows if row.get("error") is not None]
        for sk in failed:
            self.db.delete_item(TableName=self.table, Key=self._key(job_id, sk))
        return len(failed)

    def _add_to_job(self, job_id: str, counters: Mapping[str, int]) -> None:
        expression, values = _assignments({}, add=counters)
        self.db.update_item(
            **self._update_op(job_id, JOB_SK, expression, "attribute_exists(job_id)", **values)
        )

    def _begin(self, job_id: str, chunk_index: int, continuation: bool) -> int | None:
        sk = chunk_sk(chunk_index)

        def plan() -> Planned:
            rows = self._get_rows(job_id, [sk])  # the chunk's alone: not the job's
            chunk = rows[0] if rows else None
            begin = self._begin_plan(chunk, continuation)
            if begin is None:
                return [], None
            if chunk is None:
                row = {
                    "job_id": job_id,
                    "sk": sk,
                    "chunk_index": chunk_index,
                    "chunk_state": state_key("running", chunk_index),
                    **begin.chunk,
                }
                write: dict[str, Any] = {
                    "Put": {
                        "TableName": self.table,
                        "Item": _attributes(row),
                        "ConditionExpression": "attribute_not_exists(sk)",
                    }
                }
            else:
                # Applied only to the row as read: its attempts and continuations unchanged.
                expression, values = _assignments(begin.chunk)
                write = {
                    "Update": self._update_op(
                        job_id,
                        sk,
                        expression,
                        "#state = :running AND #attempts = :read_attempts AND "
                        "(attribute_not_exists(#continuations) OR #continuations = :read_more)",
                        **values,
                        read_attempts=int(chunk["attempts"]),
                        running="running",
                        read_more=int(chunk.get("continuations") or 0),
                    )
                }
            expression, values = _assignments(begin.change.put, add=begin.change.add)
            # A stopped job begins nothing more but its batches' polls: its other chunks are
            # settled without running.
            running = "#state = :running"
            if not begin.poll:
                running += " AND attribute_not_exists(#stopped_by)"
            counters = self._update_op(
                job_id, JOB_SK, expression, running, **values, running="running"
            )
            return [write, {"Update": counters}], begin.attempt

        def job_not_running(reasons: list[str]) -> Exception | None:
            # Only the job's condition failed: it is not running. Had the chunk's failed too,
            # the chunk moved (e.g. settled): read it again, that decides first.
            stopped = reasons == ["None", "ConditionalCheckFailed"]
            return JobNotRunningError(f"job {job_id} is not running") if stopped else None

        result: int | None = self._transact_until_applied(
            job_id, "an attempt", plan, refused=job_not_running
        )
        return result

    def _record_outcome(
        self,
        job_id: str,
        chunk_index: int,
        outcome: Mapping[str, Field],
        *,
        begun_only: bool,
        expected: Row | None,
    ) -> Settlement:
        sk = chunk_sk(chunk_index)
        known: list[Row] = [expected] if expected is not None else []  # tried first, once

        def plan() -> Planned:
            if known:
                # The tally as the caller read it: the write's condition (its version and
                # state) says whether it still is; if not, the next plan reads it.
                job = known.pop()
                rows = self._get_rows(job_id, [sk])
                chunk = rows[0] if rows else None
                settle = self._settle_plan(job, chunk, outcome, begun_only)
                if settle.change is None:
                    return plan()  # nothing to write, so nothing to check it: read it now
            else:
                try:
                    job, chunk = self._rows(job_id, chunk_index)
                except LookupError:
                    return [], Settlement(recorded=False, job_finished=False)
                settle = self._settle_plan(job, chunk, outcome, begun_only)
            items: list[dict[str, Any]] = []
            if settle.chunk is not None and settle.change is not None:
                fields = {
                    **settle.chunk,
                    "chunk_state": state_key(str(outcome["state"]), chunk_index),
                }
                expression, values = _assignments(
                    fields, "#attempts = if_not_exists(#attempts, :zero)"
                )
                # Numbers become visible in order (the job's version guards its events_seq), so
                # the progress stream never passes over a late one.
                may_settle = "attribute_not_exists(sk)" if chunk is None else "#state = :running"
                items.append(
                    {
                        "Update": self._update_op(
                            job_id,
                            sk,
                            expression,
                            may_settle,
                            **values,
                            zero=0,
                            **({} if chunk is None else {"running": "running"}),
                        )
                    }
                )
                marker = {
                    "job_id": job_id,
                    "sk": settled_sk(int(settle.change.chunk["seq"] or 0)),
                    "chunk_index": chunk_index,
                }
                items.append({"Put": {"TableName": self.table, "Item": _attributes(marker)}})
            if settle.change is not None:
                tally = self._job_update(job_id, job, settle.change.add, settle.change.put)
                items.append({"Update": tally})
            return items, settle.settlement

        settlement: Settlement = self._transact_until_applied(job_id, f"chunk {chunk_index}", plan)
        return settlement

    def _end_run(self, job_id: str, chunk_index: int, error: str, outcome: str) -> None:
        # Only this chunk's row: guarded by the timeline read, so a run that settled or began
        # meanwhile is not overwritten (then this span is left as it is: timing, not counts).
        try:
            _, chunk = self._rows(job_id, chunk_index)
        except LookupError:
            return
        if chunk is None or chunk["state"] != "running":
            return
        if ended := self._run_ended(chunk, outcome, error):
            self._applied(
                self.db.update_item,
                **self._update_op(
                    job_id,
                    chunk_sk(chunk_index),
                    "SET #timeline = :ended",
                    "#state = :running AND #timeline = :read",
                    ended=ended,
                    read=chunk["timeline"],
                    running="running",
                ),
            )

    def _reopen(self, job_id: str, chunk_index: int) -> bool:
        sk = chunk_sk(chunk_index)

        def plan() -> Planned:
            try:
                job, chunk = self._rows(job_id, chunk_index)
            except LookupError:
                return [], False
            if not reopenable(chunk):
                return [], False
            assert chunk is not None
            change = reopen_change(job, chunk)
            expression, values = _assignments(
                {**REOPENED_CHUNK, "chunk_state": state_key("running", chunk_index)}
            )
            # Applied only to the row as read: settled as it was.
            reopen = self._update_op(
                job_id, sk, expression, "#state = :read_state", **values,
                read_state=chunk["state"],
            )  # fmt: skip
            tally = self._job_update(job_id, job, change.add, change.put)
            return [{"Update": reopen}, {"Update": tally}], True

        reopened: bool = self._transact_until_applied(job_id, "a reopen", plan)
        return reopened
