"""SQLite job store: the embedded default for the local path (WAL, one connection per thread)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path as FsPath
from typing import Any

from stores.base import BaseJobStore, Field, JobGuard, Row

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    total_chunks INTEGER NOT NULL,
    chunks_settled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    error TEXT,
    settled_by INTEGER,
    output_uri TEXT,
    events_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at);
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL,
    chunk_index INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    items INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    error TEXT,
    seq INTEGER,
    PRIMARY KEY (job_id, chunk_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL,
    item_index INTEGER NOT NULL,
    chunk_index INTEGER NOT NULL,
    id TEXT NOT NULL,
    output TEXT,
    error TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    PRIMARY KEY (job_id, item_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_chunk ON items (job_id, chunk_index);
"""


# (table, column, type) added after the first release, for _migrate.
ADDED_COLUMNS = [
    ("jobs", "output_uri", "TEXT"),
    ("jobs", "events_seq", "INTEGER NOT NULL DEFAULT 0"),
    ("chunks", "seq", "INTEGER"),
]


# Made after _migrate: a file from before `seq` existed has no column to index until then.
SEQ_INDEX = "CREATE INDEX IF NOT EXISTS chunks_by_seq ON chunks (job_id, seq)"


def _where(guard: JobGuard) -> tuple[str, list[Field]]:
    """The guard as a WHERE clause on the jobs table, and its parameters."""
    where = guard.express(
        in_states=f"state IN ({', '.join('?' * len(guard.states))})",
        failed_unstarted="(state = 'failed' AND started_at IS NULL)",
        exists="1",
        all_settled="chunks_settled >= total_chunks",
    )
    return where, list(guard.states)


def _assignments(changes: Mapping[str, Field]) -> str:
    return ", ".join(f"{field} = ?" for field in changes)


def _insert_or_ignore(db: sqlite3.Connection, table: str, row: Mapping[str, Field]) -> bool:
    """Insert the row unless its primary key exists; True when inserted."""
    columns, marks = ", ".join(row), ", ".join("?" * len(row))
    sql = f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})"
    return db.execute(sql, (*row.values(),)).rowcount == 1


class SqliteJobStore(BaseJobStore):
    """JobStore on one SQLite file; safe to share between threads."""

    def __init__(self, path: FsPath | str) -> None:
        self.path = FsPath(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns later versions introduced to a file an earlier version created."""
        with self._tx() as db:
            for table, column, ddl in ADDED_COLUMNS:
                columns = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
            db.execute(SEQ_INDEX)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit mode: every write goes through _tx's explicit BEGIN IMMEDIATE.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so read-then-write decisions can't race;
        # DEFERRED gives readers one consistent snapshot across several SELECTs.
        conn = self._conn()
        conn.execute(f"BEGIN {mode}")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        with self._tx("DEFERRED"):
            yield

    def _select(self, sql: str, *params: Any) -> list[Row]:
        return [dict(row) for row in self._conn().execute(sql, params).fetchall()]

    # --- reads ---

    def _job_row(self, job_id: str, *fields: str) -> Row | None:
        rows = self._select(f"SELECT {', '.join(fields) or '*'} FROM jobs WHERE job_id = ?", job_id)
        return rows[0] if rows else None

    def _recent_job_rows(self, limit: int) -> list[Row]:
        return self._select("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", limit)

    def _chunk_rows(self, job_id: str) -> list[Row]:
        return self._select("SELECT * FROM chunks WHERE job_id = ? ORDER BY chunk_index", job_id)

    def _settled_rows(self, job_id: str, after_seq: int) -> list[Row]:
        return self._select(
            "SELECT * FROM chunks WHERE job_id = ? AND seq > ? ORDER BY seq", job_id, after_seq
        )

    def _item_rows(self, job_id: str, chunk_index: int | None) -> list[Row]:
        if chunk_index is None:
            return self._select("SELECT * FROM items WHERE job_id = ? ORDER BY item_index", job_id)
        return self._select(
            "SELECT * FROM items WHERE job_id = ? AND chunk_index = ? ORDER BY item_index",
            job_id, chunk_index,
        )  # fmt: skip

    # --- conditional writes ---

    def _insert_job(self, row: Mapping[str, Field]) -> bool:
        with self._tx() as db:
            return _insert_or_ignore(db, "jobs", row)

    def _insert_item(self, job_id: str, row: Mapping[str, Field]) -> bool:
        with self._tx() as db:
            return _insert_or_ignore(db, "items", {"job_id": job_id, **row})

    def _update_job(self, job_id: str, guard: JobGuard, changes: Mapping[str, Field]) -> bool:
        where, params = _where(guard)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET {_assignments(changes)} WHERE job_id = ? AND ({where})",
                (*changes.values(), job_id, *params),
            )
        return cur.rowcount == 1

    def begin_attempt(self, job_id: str, chunk_index: int) -> int | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT state, attempts FROM chunks WHERE job_id = ? AND chunk_index = ?",
                (job_id, chunk_index),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO chunks (job_id, chunk_index, state, attempts)"
                    " VALUES (?, ?, 'running', 1)",
                    (job_id, chunk_index),
                )
                return 1
            if row["state"] != "running":
                return None
            db.execute(
                "UPDATE chunks SET attempts = attempts + 1 WHERE job_id = ? AND chunk_index = ?",
                (job_id, chunk_index),
            )
            return int(row["attempts"]) + 1

    def _record_outcome(
        self, job_id: str, chunk_index: int, outcome: Mapping[str, Field], *, begun_only: bool
    ) -> bool:
        key = (job_id, chunk_index)
        with self._tx() as db:
            # Already settled? Neither write applies. Never begun? Settled all the same,
            # unless begun_only (its job was cancelled: a chunk never begun never will be).
            recorded = self._settle_running(db, key, outcome) or (
                not begun_only and self._settle_unbegun(db, key, outcome)
            )
            if recorded:
                self._number_settlement(db, key)
        return recorded

    @staticmethod
    def _settle_running(
        db: sqlite3.Connection, key: tuple[str, int], outcome: Mapping[str, Field]
    ) -> bool:
        """Settle a chunk whose attempt has begun; False if it is settled (or unknown)."""
        cur = db.execute(
            f"UPDATE chunks SET {_assignments(outcome)}"
            " WHERE job_id = ? AND chunk_index = ? AND state = 'running'",
            (*outcome.values(), *key),
        )
        return cur.rowcount == 1

    @staticmethod
    def _settle_unbegun(
        db: sqlite3.Connection, key: tuple[str, int], outcome: Mapping[str, Field]
    ) -> bool:
        """Settle a chunk that never ran: it starts at 0 attempts. False if it has a row."""
        row = {"job_id": key[0], "chunk_index": key[1], "attempts": 0, **outcome}
        return _insert_or_ignore(db, "chunks", row)

    @staticmethod
    def _number_settlement(db: sqlite3.Connection, key: tuple[str, int]) -> None:
        """Count the settlement on the job and give it the job's next sequence number: the
        progress stream's event ids, never reused (a reopened chunk settles under a new one)."""
        [seq] = db.execute(
            "UPDATE jobs SET chunks_settled = chunks_settled + 1, events_seq = events_seq + 1"
            " WHERE job_id = ? RETURNING events_seq",
            (key[0],),
        ).fetchone()
        db.execute("UPDATE chunks SET seq = ? WHERE job_id = ? AND chunk_index = ?", (seq, *key))

    def reopen_chunk(self, job_id: str, chunk_index: int) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE chunks SET state = 'running', error = NULL, latency_ms = NULL, seq = NULL"
                " WHERE job_id = ? AND chunk_index = ? AND state = 'failed'",
                (job_id, chunk_index),
            )
            if cur.rowcount == 0:
                return False
            # A finished job runs again; one that failed to start, or was cancelled, stays so.
            db.execute(
                "UPDATE jobs SET chunks_settled = chunks_settled - 1, state = CASE state"
                " WHEN 'finished' THEN 'running' ELSE state END,"
                " finished_at = NULL, settled_by = NULL, output_uri = NULL WHERE job_id = ?",
                (job_id,),
            )
        return True
