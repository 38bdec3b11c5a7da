"""What one chunk attempt costs the job's row, on every store: at most one read and two writes
(the attempt begun, the outcome settled), whether or not the chunk finishes the job. The read
is the settlement's, of the tally it adds to; the first attempt at a job in a process reads the
whole row instead (the spec and sizes it needs, which never change once the job runs) and
settles on what it read, unless another settlement came between.

Counted where the store meets its database (SQL statements on `jobs`; DynamoDB calls on the
job's item), so nothing a store does is left out.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from chunking import runner
from chunking.spec import JobSpec
from chunking.store import JobStore
from stores.dynamodb import JOB_SK, DynamoJobStore
from stores.sql import SqlJobStore


@dataclass
class Traffic:
    reads: int = 0
    writes: int = 0


class SqlSpy:
    """Each statement on the `jobs` table: a read (SELECT … FROM jobs) or a write."""

    def __init__(self, traffic: Traffic, db: Any) -> None:
        self.traffic, self.db = traffic, db

    def execute(self, sql: str, params: Any = (), /) -> Any:
        count(self.traffic, sql)
        return self.db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def count(traffic: Traffic, sql: str) -> None:
    if re.search(r"\bFROM jobs\b", sql) and sql.lstrip().upper().startswith("SELECT"):
        traffic.reads += 1
    elif re.search(r"^\s*(UPDATE|INSERT INTO|DELETE FROM) jobs\b", sql, re.IGNORECASE):
        traffic.writes += 1


class DynamoSpy:
    """Each call that reads or writes the job's item (sk JOB); a transaction counts once."""

    def __init__(self, traffic: Traffic, client: Any) -> None:
        self.traffic, self.client = traffic, client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def spied(**args: Any) -> Any:
            if name == "get_item" and args["Key"]["sk"]["S"] == JOB_SK:
                self.traffic.reads += 1
            elif name == "batch_get_item":
                keys = [k for request in args["RequestItems"].values() for k in request["Keys"]]
                self.traffic.reads += any(k["sk"]["S"] == JOB_SK for k in keys)
            elif name in ("update_item", "put_item") and job_key(args):
                self.traffic.writes += 1
            elif name == "transact_write_items":
                ops = [next(iter(item.values())) for item in args["TransactItems"]]
                self.traffic.writes += any(job_key(op) for op in ops)
            return method(**args)

        return spied


def job_key(op: dict[str, Any]) -> bool:
    key = op.get("Key") or op.get("Item") or {}
    return bool(key.get("sk", {}).get("S") == JOB_SK)


@contextmanager
def spied(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[Traffic]:
    traffic = Traffic()
    if isinstance(store, DynamoJobStore):
        monkeypatch.setattr(store, "db", DynamoSpy(traffic, store.db))
    else:
        assert isinstance(store, SqlJobStore)
        transaction, select = store._transaction, store._select
        selecting = threading.local()  # a read that runs in a transaction is counted once

        @contextmanager
        def counted_transaction() -> Iterator[Any]:
            with transaction() as db:
                yield db if getattr(selecting, "now", False) else SqlSpy(traffic, db)

        def counted_select(sql: str, *params: Any) -> Any:
            count(traffic, sql)
            selecting.now = True
            try:
                return select(sql, *params)
            finally:
                selecting.now = False

        monkeypatch.setattr(store, "_transaction", counted_transaction)
        monkeypatch.setattr(store, "_select", counted_select)
    yield traffic


def attempt(store: JobStore, job_id: str, index: int) -> runner.AttemptOutcome:
    return asyncio.run(runner.attempt_chunk(store, job_id, index, last_attempt=False))


def test_one_attempt_reads_the_job_row_once_and_writes_it_twice(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = f"rows-{uuid.uuid4().hex[:10]}"
    store.create_job(job_id, JobSpec(total_items=3, chunk_size=1, item_delay_ms=0), "local")
    store.start_job(job_id)
    runner.forget_jobs()  # this process has not seen the job: its first chunk reads its spec
    seen = []
    for index in range(3):
        with spied(store, monkeypatch) as traffic:
            outcome = attempt(store, job_id, index)
        assert outcome.outcome == "succeeded"
        seen.append((traffic.reads, traffic.writes))
    assert outcome.job_finished  # the last one finished the job, in the same two writes
    assert all(reads <= 1 and writes <= 2 for reads, writes in seen), seen


def test_a_settlement_that_came_between_is_read_not_overwritten(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt read the job, then another chunk settled while it ran: its settlement
    finds the row moved, reads it, and counts both, each under its own number."""
    from workloads.simulate import Simulate

    job_id = f"moved-{uuid.uuid4().hex[:10]}"
    store.create_job(job_id, JobSpec(total_items=3, chunk_size=1, item_delay_ms=0), "local")
    store.start_job(job_id)
    runner.forget_jobs()
    run_chunk = Simulate.run_chunk

    async def another_settles_meanwhile(self: Any, store: JobStore, job: Any, *args: Any) -> Any:
        if args[0].index == 0:
            await asyncio.to_thread(store.begin_attempt, job_id, 1)
            await asyncio.to_thread(store.settle_chunk, job_id, 1, succeeded=True, items=1)
        return await run_chunk(self, store, job, *args)

    monkeypatch.setattr(Simulate, "run_chunk", another_settles_meanwhile)
    assert attempt(store, job_id, 0).outcome == "succeeded"
    assert attempt(store, job_id, 2).job_finished
    status = store.status(job_id)
    assert status is not None
    assert (status.status, status.chunks_succeeded, status.items_processed) == ("succeeded", 3, 3)
    settled = store.settled_since(job_id, 0, 10)
    assert sorted((c.seq, c.index) for c in settled) == [(1, 1), (2, 0), (3, 2)]
    status = store.status(job_id)
    assert status is not None and (status.status, status.chunks_succeeded) == ("succeeded", 3)
