"""SQLite job store: the embedded default for the local path (WAL, one connection per thread)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Any

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


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class SqliteJobStore:
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

    @staticmethod
    def _job(row: sqlite3.Row) -> JobRecord:
        return JobRecord(
            job_id=row["job_id"],
            path=row["path"],
            spec=JobSpec.model_validate_json(row["spec"]),
            state=row["state"],
            total_chunks=row["total_chunks"],
            created_at=datetime.fromisoformat(row["created_at"]),
            started_at=_ts(row["started_at"]),
            finished_at=_ts(row["finished_at"]),
            error=row["error"],
            settled_by=row["settled_by"],
            output_uri=row["output_uri"],
        )

    def create_job(self, job_id: str, spec: JobSpec, path: Path) -> tuple[JobRecord, bool]:
        spec_json = spec.model_copy(update={"job_id": job_id}).model_dump_json()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO jobs (job_id, path, spec, state, total_chunks, created_at)"
                " VALUES (?, ?, ?, 'queued', ?, ?)",
                (job_id, path, spec_json, spec.total_chunks, _now().isoformat()),
            )
            created = cur.rowcount == 1
            row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        job = self._job(row)
        if not created and (job.spec.model_dump_json() != spec_json or job.path != path):
            raise JobConflictError(
                f"job_id {job_id!r} is already used by a different job; choose another job_id"
            )
        return job, created

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def list_jobs(self, limit: int) -> list[JobRecord]:
        rows = (
            self._conn()
            .execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
            .fetchall()
        )
        return [self._job(r) for r in rows]

    def start_job(self, job_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, error = NULL WHERE job_id = ?"
                " AND (state = 'queued' OR (state = 'failed' AND started_at IS NULL))",
                (_now().isoformat(), job_id),
            )
        return cur.rowcount == 1

    def fail_job(self, job_id: str, error: str) -> None:
        with self._tx() as db:
            db.execute(
                # started_at is cleared: the job never properly started, so it may be requeued.
                "UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, started_at = NULL"
                " WHERE job_id = ? AND state IN ('queued', 'running')",
                (error, _now().isoformat(), job_id),
            )

    def cancel_job(self, job_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?"
                " WHERE job_id = ? AND state IN ('queued', 'running')",
                (_now().isoformat(), job_id),
            )
        return cur.rowcount == 1

    def requeue_job(self, job_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = 'queued', error = NULL, finished_at = NULL"
                " WHERE job_id = ? AND state = 'failed' AND started_at IS NULL",
                (job_id,),
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
        state = "succeeded" if succeeded else "failed"
        values: tuple[Any, ...] = (state, items if succeeded else 0, latency_ms, error)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE chunks SET state = ?, items = ?, latency_ms = ?, error = ?"
                " WHERE job_id = ? AND chunk_index = ? AND state = 'running'",
                (*values, job_id, chunk_index),
            )
            if cur.rowcount == 0 and not begun_only:
                # A chunk settled without an attempt (one that never ran) starts at 0 attempts.
                cur = db.execute(
                    "INSERT OR IGNORE INTO chunks"
                    " (job_id, chunk_index, state, attempts, items, latency_ms, error)"
                    " VALUES (?, ?, ?, 0, ?, ?, ?)",
                    (job_id, chunk_index, *values),
                )
            recorded = cur.rowcount == 1
            if recorded:
                # Each settlement gets the job's next sequence number: the progress stream's
                # event ids, never reused (a reopened chunk settles under a new one).
                [seq] = db.execute(
                    "UPDATE jobs SET chunks_settled = chunks_settled + 1,"
                    " events_seq = events_seq + 1 WHERE job_id = ? RETURNING events_seq",
                    (job_id,),
                ).fetchone()
                db.execute(
                    "UPDATE chunks SET seq = ? WHERE job_id = ? AND chunk_index = ?",
                    (seq, job_id, chunk_index),
                )
            # Tried on duplicates too: a job restarted after its chunks settled still finishes.
            cur = db.execute(
                "UPDATE jobs SET state = 'finished', finished_at = ?, settled_by = ?"
                " WHERE job_id = ? AND state = 'running' AND chunks_settled >= total_chunks",
                (_now().isoformat(), chunk_index, job_id),
            )
            if cur.rowcount == 1:
                return Settlement(recorded=recorded, job_finished=True)
            job = db.execute("SELECT settled_by FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            finished = job is not None and job["settled_by"] == chunk_index
            return Settlement(recorded=recorded, job_finished=finished)

    def reopen_chunk(self, job_id: str, chunk_index: int) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE chunks SET state = 'running', error = NULL, latency_ms = NULL, seq = NULL"
                " WHERE job_id = ? AND chunk_index = ? AND state = 'failed'",
                (job_id, chunk_index),
            )
            if cur.rowcount == 0:
                return False
            db.execute(
                "UPDATE jobs SET chunks_settled = chunks_settled - 1, state = CASE state"
                " WHEN 'finished' THEN 'running' ELSE state END,"
                " finished_at = NULL, settled_by = NULL, output_uri = NULL WHERE job_id = ?",
                (job_id,),
            )
        return True

    def set_output_uri(self, job_id: str, uri: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET output_uri = ? WHERE job_id = ?", (uri, job_id))

    def record_item(self, job_id: str, result: ItemResult) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO items (job_id, item_index, chunk_index, id, output, error,"
                " prompt_tokens, completion_tokens, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, result.index, result.chunk_index, result.id, result.output, result.error,
                 result.prompt_tokens, result.completion_tokens, result.latency_ms),
            )  # fmt: skip
        return cur.rowcount == 1

    def item_results(self, job_id: str, chunk_index: int) -> list[ItemResult]:
        return self._items(job_id, chunk_index)

    def _items(self, job_id: str, chunk_index: int | None = None) -> list[ItemResult]:
        """A chunk's item results, or the whole job's."""
        sql = "SELECT * FROM items WHERE job_id = ?"
        args: list[str | int] = [job_id]
        if chunk_index is not None:
            sql, args = sql + " AND chunk_index = ?", [job_id, chunk_index]
        rows = self._conn().execute(sql + " ORDER BY item_index", args).fetchall()
        return [
            ItemResult(
                index=r["item_index"], chunk_index=r["chunk_index"], id=r["id"],
                output=r["output"], error=r["error"], prompt_tokens=r["prompt_tokens"],
                completion_tokens=r["completion_tokens"], latency_ms=r["latency_ms"],
            )
            for r in rows
        ]  # fmt: skip

    def chunks(self, job_id: str) -> list[ChunkRecord]:
        return self._chunks("SELECT * FROM chunks WHERE job_id = ? ORDER BY chunk_index", (job_id,))

    def settled_since(self, job_id: str, after_seq: int) -> list[ChunkRecord]:
        """The chunks settled after `after_seq`, in the order they settled (their `seq`)."""
        return self._chunks(
            "SELECT * FROM chunks WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, after_seq)
        )

    def _chunks(self, sql: str, params: tuple[Any, ...]) -> list[ChunkRecord]:
        rows = self._conn().execute(sql, params).fetchall()
        return [
            ChunkRecord(
                index=r["chunk_index"],
                state=r["state"],
                attempts=r["attempts"],
                items=r["items"],
                latency_ms=r["latency_ms"],
                error=r["error"],
                seq=r["seq"],
            )
            for r in rows
        ]

    def status(self, job_id: str) -> JobStatus | None:
        with self._tx("DEFERRED"):
            job = self.get_job(job_id)
            chunks = self.chunks(job_id) if job else []
            items = self._items(job_id) if job else []
        usage = usage_from(items, get_settings().llm_prices)
        return build_status(job, chunks, _now(), usage) if job else None
