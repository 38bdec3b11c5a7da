"""The job store on a SQL database, written once for SQLite and Postgres.

Every write is one transaction. One that decides from what it read holds what it read, the
chunk's row before the job's (`FOR UPDATE` on Postgres, always in that order, so two never wait
on each other; SQLite's `BEGIN IMMEDIATE` already holds the database's one write lock), so the
decision (stores.base's) cannot race another delivery's. An attempt reads only the chunk's
row: the job's is written by a statement that applies only while the job runs. Statements use
`?` placeholders; a dialect that needs others maps them in its `_tx`'s connection.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from chunking.status import ChunkState
from chunking.store import JobNotRunningError, Settlement
from stores.base import (
    REOPENED_CHUNK,
    TALLY_FIELDS,
    BaseJobStore,
    Field,
    JobGuard,
    Row,
    TallyChange,
    reopen_change,
    reopenable,
)

# The tables, in either dialect: {int}, {real} and {keyed} (how a table keyed by its primary
# key alone is declared) are filled in by the store.
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    tenant TEXT,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    total_chunks {int} NOT NULL,
    total_items {int} NOT NULL DEFAULT 0,
    chunks_settled {int} NOT NULL DEFAULT 0,
    chunks_succeeded {int} NOT NULL DEFAULT 0,
    chunks_failed {int} NOT NULL DEFAULT 0,
    chunks_running {int} NOT NULL DEFAULT 0,
    chunks_begun {int} NOT NULL DEFAULT 0,
    attempts {int} NOT NULL DEFAULT 0,
    items_processed {int} NOT NULL DEFAULT 0,
    prompt_tokens {int} NOT NULL DEFAULT 0,
    completion_tokens {int} NOT NULL DEFAULT 0,
    items_failed {int} NOT NULL DEFAULT 0,
    chunks_resent {int} NOT NULL DEFAULT 0,
    latency TEXT,
    failed_head TEXT,
    version {int} NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    error TEXT,
    settled_by {int},
    output_uri TEXT,
    errors_uri TEXT,
    events_seq {int} NOT NULL DEFAULT 0,
    active_at TEXT,
    sweep_passes {int} NOT NULL DEFAULT 0,
    sweep_after {int},
    swept_at TEXT,
    rate_limited {int} NOT NULL DEFAULT 0,
    rate_wait_ms {int} NOT NULL DEFAULT 0,
    batches {int} NOT NULL DEFAULT 0,
    batch_requests {int} NOT NULL DEFAULT 0,
    batch_done {int} NOT NULL DEFAULT 0,
    batch_resubmitted {int} NOT NULL DEFAULT 0,
    batch_requeued {int} NOT NULL DEFAULT 0,
    items_lost {int} NOT NULL DEFAULT 0,
    redrives {int} NOT NULL DEFAULT 0,
    spent_nano {int} NOT NULL DEFAULT 0,
    headroom_nano {int} NOT NULL DEFAULT 0,
    stopped_by TEXT
);
CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at);
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL,
    chunk_index {int} NOT NULL,
    state TEXT NOT NULL,
    attempts {int} NOT NULL,
    items {int} NOT NULL DEFAULT 0,
    latency_ms {real},
    error TEXT,
    seq {int},
    prompt_tokens {int} NOT NULL DEFAULT 0,
    completion_tokens {int} NOT NULL DEFAULT 0,
    items_failed {int} NOT NULL DEFAULT 0,
    continuations {int} NOT NULL DEFAULT 0,
    progress TEXT,
    timeline TEXT,
    batch TEXT,
    batch_version {int} NOT NULL DEFAULT 0,
    items_lost {int} NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, chunk_index)
){keyed};
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL,
    item_index {int} NOT NULL,
    chunk_index {int} NOT NULL,
    id TEXT NOT NULL,
    output TEXT,
    error TEXT,
    prompt_tokens {int} NOT NULL DEFAULT 0,
    completion_tokens {int} NOT NULL DEFAULT 0,
    latency_ms {real},
    output_uri TEXT,
    attempts {int} NOT NULL DEFAULT 1,
    PRIMARY KEY (job_id, item_index)
){keyed};
CREATE INDEX IF NOT EXISTS items_by_chunk ON items (job_id, chunk_index);
CREATE TABLE IF NOT EXISTS claims (
    claim TEXT PRIMARY KEY,
    expires_at {real} NOT NULL
){keyed};
CREATE INDEX IF NOT EXISTS claims_by_expiry ON claims (expires_at);
CREATE TABLE IF NOT EXISTS budgets (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version {int} NOT NULL
){keyed};
"""

# Columns added to SCHEMA since its tables were first created: (table, column, declaration,
# with {int} filled in by the store), added to a database an earlier version created.
LATER_COLUMNS = (
    ("jobs", "active_at", "TEXT"),
    ("jobs", "sweep_passes", "{int} NOT NULL DEFAULT 0"),
    ("jobs", "sweep_after", "{int}"),
    ("jobs", "swept_at", "TEXT"),
    ("jobs", "rate_limited", "{int} NOT NULL DEFAULT 0"),
    ("jobs", "rate_wait_ms", "{int} NOT NULL DEFAULT 0"),
    *(
        ("jobs", name, "{int} NOT NULL DEFAULT 0")
        for name in ("batches", "batch_requests", "batch_done", "batch_resubmitted")
    ),
    ("jobs", "batch_requeued", "{int} NOT NULL DEFAULT 0"),
    ("chunks", "batch", "TEXT"),
    ("chunks", "batch_version", "{int} NOT NULL DEFAULT 0"),
    *(
        ("jobs", name, "{int} NOT NULL DEFAULT 0")
        for name in ("items_lost", "redrives", "spent_nano", "headroom_nano")
    ),
    ("jobs", "stopped_by", "TEXT"),
    ("jobs", "tenant", "TEXT"),
    ("chunks", "items_lost", "{int} NOT NULL DEFAULT 0"),
    ("jobs", "errors_uri", "TEXT"),
    ("items", "attempts", "{int} NOT NULL DEFAULT 1"),
)

# A running job from before `active_at` shows life as of its start, so the sweep sees it too.
ACTIVE_SINCE_START = (
    "UPDATE jobs SET active_at = started_at WHERE state = 'running' AND active_at IS NULL"
)

# After SCHEMA (and after a database from before these columns has them).
INDEXES = (
    "CREATE INDEX IF NOT EXISTS chunks_by_seq ON chunks (job_id, seq)",
    "CREATE INDEX IF NOT EXISTS chunks_by_state ON chunks (job_id, state, chunk_index)",
    # The sweep's stalled jobs: running ones by when they last showed life.
    "CREATE INDEX IF NOT EXISTS jobs_by_activity ON jobs (state, active_at)",
    # A job's chunks with a provider batch (batch mode), few of a job's rows otherwise.
    "CREATE INDEX IF NOT EXISTS chunks_batched ON chunks (job_id, chunk_index) "
    "WHERE batch IS NOT NULL",
    # A tenant's jobs, newest first (GET /jobs with a tenant's key).
    "CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, created_at)",
    # A chunk's failed items (a retry forgets them, the errors file lists them).
    "CREATE INDEX IF NOT EXISTS items_failed ON items (job_id, chunk_index, item_index) "
    "WHERE error IS NOT NULL",
)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """A connection inside a transaction, as both drivers offer it (rows read by name)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...


def _where(guard: JobGuard) -> tuple[str, list[Field]]:
    """The guard as a WHERE clause on the jobs table, and its parameters."""
    where = guard.express(
        in_states=f"state IN ({', '.join('?' * len(guard.states))})",
        failed_unstarted="(state = 'failed' AND started_at IS NULL)",
        exists="1 = 1",
        all_settled="chunks_settled >= total_chunks",
    )
    return where, list(guard.states)


def _assignments(changes: Mapping[str, Field]) -> str:
    return ", ".join(f"{field} = ?" for field in changes)


def insert_or_ignore(db: Db, table: str, row: Mapping[str, Field]) -> bool:
    """Insert the row unless its primary key exists; True when inserted."""
    columns, marks = ", ".join(row), ", ".join("?" * len(row))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    return db.execute(sql, (*row.values(),)).rowcount == 1


CLAIMS_PER_PURGE = 500


class SqlJobStore(BaseJobStore):
    """The store's primitives in SQL; a dialect gives transactions and the job row's lock."""

    def __init__(self) -> None:
        self._batching = threading.local()  # the transaction batch() holds open, per thread
        self._claims_made = 0

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Db]:
        """One transaction that may write (committed on exit, rolled back on an error)."""

    @contextmanager
    def batch(self) -> Iterator[None]:
        # One transaction (one commit) for this thread's writes inside; each a savepoint of it.
        with self._transaction() as db:
            self._batching.db = db
            try:
                yield
            finally:
                self._batching.db = None

    @contextmanager
    def _tx(self) -> Iterator[Db]:
        """A write, all or nothing: its own transaction, or a savepoint of batch()'s."""
        db: Db | None = getattr(self._batching, "db", None)
        if db is None:
            with self._transaction() as db:
                yield db
            return
        db.execute("SAVEPOINT write")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK TO SAVEPOINT write")
            db.execute("RELEASE SAVEPOINT write")
            raise
        db.execute("RELEASE SAVEPOINT write")

    @abstractmethod
    def _select(self, sql: str, *params: Any) -> list[Row]:
        """Rows of one read, as dicts."""

    #: Appended to a read of a row that holds it for the rest of the transaction; empty where
    #: the transaction already excludes every other writer (SQLite).
    LOCK_ROW = ""

    # --- reads ---

    def _job_row(self, job_id: str, *fields: str) -> Row | None:
        rows = self._select(f"SELECT {', '.join(fields) or '*'} FROM jobs WHERE job_id = ?", job_id)
        return rows[0] if rows else None

    def _recent_job_rows(self, limit: int, tenant: str | None) -> list[Row]:
        if tenant is None:
            return self._select("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", limit)
        return self._select(
            "SELECT * FROM jobs WHERE tenant = ? ORDER BY created_at DESC LIMIT ?", tenant, limit
        )

    def _stalled_job_rows(self, active_before: str, limit: int) -> list[Row]:
        return self._select(
            "SELECT * FROM jobs WHERE state = 'running' AND active_at < ?"
            " ORDER BY active_at LIMIT ?",
            active_before,
            limit,
        )

    def _chunk_rows(
        self, job_id: str, state: ChunkState | None, after: int, limit: int
    ) -> list[Row]:
        where, params = ("", ()) if state is None else (" AND state = ?", (state,))
        return self._select(
            f"SELECT * FROM chunks WHERE job_id = ?{where} AND chunk_index > ?"
            " ORDER BY chunk_index LIMIT ?",
            job_id,
            *params,
            after,
            limit,
        )

    def _settled_rows(self, job_id: str, after_seq: int, limit: int) -> list[Row]:
        return self._select(
            "SELECT * FROM chunks WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            job_id,
            after_seq,
            limit,
        )

    def _item_rows(self, job_id: str, chunk_index: int) -> list[Row]:
        return self._select(
            "SELECT * FROM items WHERE job_id = ? AND chunk_index = ? ORDER BY item_index",
            job_id,
            chunk_index,
        )

    # --- conditional writes ---

    def claim_once(self, key: str, now: float, ttl_s: float) -> bool:
        with self._tx() as db:
            self._claims_made += 1
            if self._claims_made % CLAIMS_PER_PURGE == 0:  # expired claims go, a batch at a time
                db.execute("DELETE FROM claims WHERE expires_at < ?", (now,))
            # A new key is inserted; a taken one is taken again only once it has expired.
            taken = db.execute(
                "INSERT INTO claims (claim, expires_at) VALUES (?, ?) ON CONFLICT (claim) "
                "DO UPDATE SET expires_at = excluded.expires_at WHERE claims.expires_at < ?",
                (key, now + ttl_s, now),
            )
            return taken.rowcount == 1

    def _budget_row(self, name: str) -> tuple[str | None, int]:
        rows = self._select("SELECT state, version FROM budgets WHERE name = ?", name)
        return (rows[0]["state"], int(rows[0]["version"])) if rows else (None, 0)

    def _chunk_batch_row(self, job_id: str, chunk_index: int) -> tuple[str | None, int]:
        rows = self._select(
            "SELECT batch, batch_version FROM chunks WHERE job_id = ? AND chunk_index = ?",
            job_id,
            chunk_index,
        )
        return (rows[0]["batch"], int(rows[0]["batch_version"] or 0)) if rows else (None, 0)

    def _put_chunk_batch(self, job_id: str, chunk_index: int, state: str, version: int) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE chunks SET batch = ?, batch_version = ? WHERE job_id = ? AND "
                "chunk_index = ? AND batch_version = ? AND state = 'running'",
                (state, version + 1, job_id, chunk_index, version),
            )
            return cur.rowcount == 1

    def _put_budget(self, name: str, state: str, version: int) -> bool:
        with self._tx() as db:
            if version == 0:
                return insert_or_ignore(db, "budgets", {"name": name, "state": state, "version": 1})
            cur = db.execute(
                "UPDATE budgets SET state = ?, version = ? WHERE name = ? AND version = ?",
                (state, version + 1, name, version),
            )
            return cur.rowcount == 1

    def _insert_job(self, row: Mapping[str, Field]) -> bool:
        with self._tx() as db:
            return insert_or_ignore(db, "jobs", row)

    def _insert_items(self, job_id: str, rows: Sequence[Mapping[str, Field]]) -> list[bool]:
        with self._tx() as db:  # one commit for them all
            return [insert_or_ignore(db, "items", {"job_id": job_id, **row}) for row in rows]

    def _update_job(self, job_id: str, guard: JobGuard, changes: Mapping[str, Field]) -> bool:
        # One statement: the guard is checked on the row it updates, under the row's lock.
        where, params = _where(guard)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET {_assignments(changes)} WHERE job_id = ? AND ({where})",
                (*changes.values(), job_id, *params),
            )
            return cur.rowcount == 1

    def _add_to_job(self, job_id: str, counters: Mapping[str, int]) -> None:
        with self._tx() as db:
            _add(db, job_id, counters)

    def _take_headroom(self, job_id: str, nano: int) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET headroom_nano = headroom_nano - ? "
                "WHERE job_id = ? AND headroom_nano >= ?",
                (nano, job_id, nano),
            )
            return cur.rowcount == 1

    def _delete_failed_items(self, job_id: str, chunk_index: int) -> int:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM items WHERE job_id = ? AND chunk_index = ? AND error IS NOT NULL",
                (job_id, chunk_index),
            )
            return int(cur.rowcount)

    def _begin(self, job_id: str, chunk_index: int, continuation: bool) -> int | None:
        key = (job_id, chunk_index)
        with self._tx() as db:
            for _ in range(2):  # once more when another delivery inserted the chunk meanwhile
                plan = self._begin_plan(self._chunk_row(db, key), continuation)
                if plan is None:
                    return None  # settled: never run (or count) it again
                if not plan.insert:
                    _update_chunk(db, key, plan.chunk)
                elif not insert_or_ignore(
                    db, "chunks", {"job_id": job_id, "chunk_index": chunk_index, **plan.chunk}
                ):
                    continue
                # A stopped job begins nothing more but its batches' polls: its other chunks
                # are settled without running.
                running = " AND state = 'running'" + (
                    "" if plan.poll else " AND stopped_by IS NULL"
                )
                if not _apply(db, job_id, plan.change, guard=running):
                    raise JobNotRunningError(f"job {job_id} is not running")  # rolls it back
                return plan.attempt
        raise RuntimeError(f"job {job_id}: chunk {chunk_index} could not be begun")

    def _record_outcome(
        self,
        job_id: str,
        chunk_index: int,
        outcome: Mapping[str, Field],
        *,
        begun_only: bool,
        expected: Row | None,
    ) -> Settlement:
        key = (job_id, chunk_index)
        for known in (expected, None) if expected is not None else (None,):
            try:
                with self._tx() as db:
                    row = self._chunk_row(db, key)  # the chunk's row first, then the job's
                    job = dict(known) if known is not None else self._tally_row(db, job_id)
                    plan = self._settle_plan(job and dict(job), row, outcome, begun_only)
                    if known is not None and plan.change is None:
                        raise _Moved  # nothing to write: decide on the row as it is now
                    if plan.chunk is not None:
                        chunk = {"job_id": job_id, "attempts": 0, **plan.chunk}
                        if plan.insert:
                            insert_or_ignore(db, "chunks", chunk)
                        else:
                            _update_chunk(db, key, plan.chunk)
                    if plan.change is not None:
                        # As it was known: its version and state unchanged (a read holds it).
                        guard, values = ("", ()) if known is None else (_AS_KNOWN, _as_known(job))
                        if not _apply(db, job_id, plan.change, guard, values):
                            raise _Moved  # rolls the chunk's write back too
                return plan.settlement
            except _Moved:
                continue
        raise AssertionError("a settlement decided on the row it read always applies")

    def _reopen(self, job_id: str, chunk_index: int) -> bool:
        key = (job_id, chunk_index)
        with self._tx() as db:
            row = self._chunk_row(db, key)
            job = self._tally_row(db, job_id)
            if not reopenable(row) or job is None:
                return False
            assert row is not None
            _update_chunk(db, key, REOPENED_CHUNK)
            _apply(db, job_id, reopen_change(dict(job), row))
        return True

    def _end_run(self, job_id: str, chunk_index: int, error: str, outcome: str) -> None:
        key = (job_id, chunk_index)
        with self._tx() as db:
            row = self._chunk_row(db, key)
            ended = row and row["state"] == "running" and self._run_ended(row, outcome, error)
            if ended:
                _update_chunk(db, key, {"timeline": ended})

    def _chunk_row(self, db: Db, key: tuple[str, int]) -> dict[str, Any] | None:
        """The chunk's row, held for the rest of the transaction (a decision rests on it)."""
        sql = f"SELECT * FROM chunks WHERE job_id = ? AND chunk_index = ?{self.LOCK_ROW}"
        row = db.execute(sql, key).fetchone()
        return None if row is None else dict(row)

    def _tally_row(self, db: Db, job_id: str) -> Any:
        """The job's tally, not its spec (a settlement needs no more, and the spec may be big),
        with the job's row locked for the rest of the transaction."""
        sql = f"SELECT {', '.join(TALLY_FIELDS)} FROM jobs WHERE job_id = ?{self.LOCK_ROW}"
        return db.execute(sql, (job_id,)).fetchone()


def _update_chunk(db: Db, key: tuple[str, int], fields: Mapping[str, Field]) -> None:
    sql = f"UPDATE chunks SET {_assignments(fields)} WHERE job_id = ? AND chunk_index = ?"
    db.execute(sql, (*fields.values(), *key))


def _add(db: Db, job_id: str, counters: Mapping[str, int]) -> None:
    sets = ", ".join(f"{name} = {name} + ?" for name in counters)
    db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", (*counters.values(), job_id))


def _apply(
    db: Db, job_id: str, change: TallyChange, guard: str = "", values: Sequence[Field] = ()
) -> bool:
    """The change to the job's row (if `guard`, a further WHERE clause with its `values`,
    holds): inside the caller's transaction, so nothing moved since the row it was computed
    from was read."""
    sets = [f"{name} = {name} + ?" for name in change.add] + [f"{name} = ?" for name in change.put]
    cur = db.execute(
        f"UPDATE jobs SET {', '.join(sets)} WHERE job_id = ?{guard}",
        (*change.add.values(), *change.put.values(), job_id, *values),
    )
    return cur.rowcount == 1


class _Moved(Exception):
    """The job's row is not as the caller knew it: undo, read it, decide again."""


# A settlement on a tally its caller read before: only while no other write recomputed it.
_AS_KNOWN = " AND version = ? AND state = ?"


def _as_known(job: Row) -> tuple[Field, Field]:
    return int(job.get("version") or 0), job.get("state")
