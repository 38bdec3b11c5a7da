"""SQLite job store: the embedded default for the local path (WAL, one connection per thread)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path as FsPath
from typing import Any

from chunking.status import ChunkState
from stores.base import (
    COUNTERS,
    SUMMARIES,
    BaseJobStore,
    Field,
    JobGuard,
    Row,
    TallyChange,
    attempt_change,
    reopen_change,
    settle_change,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    total_chunks INTEGER NOT NULL,
    total_items INTEGER NOT NULL DEFAULT 0,
    chunks_settled INTEGER NOT NULL DEFAULT 0,
    chunks_succeeded INTEGER NOT NULL DEFAULT 0,
    chunks_failed INTEGER NOT NULL DEFAULT 0,
    chunks_running INTEGER NOT NULL DEFAULT 0,
    chunks_begun INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    items_processed INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    items_failed INTEGER NOT NULL DEFAULT 0,
    chunks_resent INTEGER NOT NULL DEFAULT 0,
    latency TEXT,
    failed_head TEXT,
    version INTEGER NOT NULL DEFAULT 0,
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
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    items_failed INTEGER NOT NULL DEFAULT 0,
    continuations INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
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
    output_uri TEXT,
    PRIMARY KEY (job_id, item_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_chunk ON items (job_id, chunk_index);
"""


_COUNT = "INTEGER NOT NULL DEFAULT 0"
# (table, column, type) added after the first release, for _migrate.
ADDED_COLUMNS = [
    ("jobs", "output_uri", "TEXT"),
    ("jobs", "events_seq", _COUNT),
    ("chunks", "seq", "INTEGER"),
    *(("jobs", name, _COUNT) for name in (
        "total_items", "chunks_succeeded", "chunks_failed", "chunks_running", "chunks_begun",
        "attempts", "items_processed", "prompt_tokens", "completion_tokens", "items_failed",
        "version", "chunks_resent")),
    ("jobs", "latency", "TEXT"),
    ("jobs", "failed_head", "TEXT"),
    *(("chunks", name, _COUNT) for name in (
        "prompt_tokens", "completion_tokens", "items_failed", "continuations")),
    ("chunks", "progress", "TEXT"),
    ("items", "output_uri", "TEXT"),
]  # fmt: skip

# A file from before the tally: each job's counters recounted once from its rows (the latency
# summary and the failed chunks' head start empty: the chunks endpoint still lists them).
RECOUNT = """
UPDATE jobs SET
    total_items = json_extract(spec, '$.total_items'),
    chunks_succeeded = (SELECT count(*) FROM chunks c
                        WHERE c.job_id = jobs.job_id AND c.state = 'succeeded'),
    chunks_failed = (SELECT count(*) FROM chunks c
                     WHERE c.job_id = jobs.job_id AND c.state = 'failed'),
    chunks_running = (SELECT count(*) FROM chunks c
                      WHERE c.job_id = jobs.job_id AND c.state = 'running'),
    chunks_begun = (SELECT count(*) FROM chunks c WHERE c.job_id = jobs.job_id AND attempts > 0),
    attempts = (SELECT coalesce(sum(attempts), 0) FROM chunks c WHERE c.job_id = jobs.job_id),
    items_processed = (SELECT coalesce(sum(items), 0) FROM chunks c
                       WHERE c.job_id = jobs.job_id AND c.state = 'succeeded'),
    prompt_tokens = (SELECT coalesce(sum(prompt_tokens), 0) FROM items i
                     WHERE i.job_id = jobs.job_id),
    completion_tokens = (SELECT coalesce(sum(completion_tokens), 0) FROM items i
                         WHERE i.job_id = jobs.job_id),
    items_failed = (SELECT count(*) FROM items i WHERE i.job_id = jobs.job_id
                    AND i.error IS NOT NULL)
"""

# Made after _migrate: a file from before a column existed has nothing to index until then.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS chunks_by_seq ON chunks (job_id, seq)",
    "CREATE INDEX IF NOT EXISTS chunks_by_state ON chunks (job_id, state, chunk_index)",
)


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
            added = set()
            for table, column, ddl in ADDED_COLUMNS:
                columns = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
                    added.add((table, column))
            if ("jobs", "chunks_succeeded") in added:
                db.execute(RECOUNT)
            for index in INDEXES:
                db.execute(index)

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

    def _select(self, sql: str, *params: Any) -> list[Row]:
        return [dict(row) for row in self._conn().execute(sql, params).fetchall()]

    # --- reads ---

    def _job_row(self, job_id: str, *fields: str) -> Row | None:
        rows = self._select(f"SELECT {', '.join(fields) or '*'} FROM jobs WHERE job_id = ?", job_id)
        return rows[0] if rows else None

    def _recent_job_rows(self, limit: int) -> list[Row]:
        return self._select("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", limit)

    def _chunk_rows(
        self, job_id: str, state: ChunkState | None, after: int, limit: int
    ) -> list[Row]:
        where, params = ("", ()) if state is None else (" AND state = ?", (state,))
        return self._select(
            f"SELECT * FROM chunks WHERE job_id = ?{where} AND chunk_index > ?"
            " ORDER BY chunk_index LIMIT ?",
            job_id, *params, after, limit,
        )  # fmt: skip

    def _settled_rows(self, job_id: str, after_seq: int) -> list[Row]:
        return self._select(
            "SELECT * FROM chunks WHERE job_id = ? AND seq > ? ORDER BY seq", job_id, after_seq
        )

    def _item_rows(self, job_id: str, chunk_index: int) -> list[Row]:
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

    def _add_to_job(self, job_id: str, counters: Mapping[str, int]) -> None:
        with self._tx() as db:
            _add(db, job_id, counters)

    def _begin(self, job_id: str, chunk_index: int, continuation: bool) -> int | None:
        key = (job_id, chunk_index)
        with self._tx() as db:
            row = _chunk_row(db, key)
            if row is not None and row["state"] != "running":
                return None  # settled: never run (or count) it again
            if continuation:
                if row is None:
                    return None
                db.execute(
                    "UPDATE chunks SET continuations = continuations + 1"
                    " WHERE job_id = ? AND chunk_index = ?",
                    key,
                )
                return int(row["attempts"])
            previous = None if row is None else int(row["attempts"])
            if row is None:
                db.execute(
                    "INSERT INTO chunks (job_id, chunk_index, state, attempts)"
                    " VALUES (?, ?, 'running', 1)",
                    key,
                )
            else:
                db.execute(
                    "UPDATE chunks SET attempts = attempts + 1"
                    " WHERE job_id = ? AND chunk_index = ?",
                    key,
                )
            _add(db, job_id, attempt_change(previous))
            return (previous or 0) + 1

    def _record_outcome(
        self, job_id: str, chunk_index: int, outcome: Mapping[str, Field], *, begun_only: bool
    ) -> bool:
        key = (job_id, chunk_index)
        with self._tx() as db:
            row = _chunk_row(db, key)
            job = _tally_row(db, job_id)
            # Already settled? Nothing applies. Never begun? Settled all the same, unless
            # begun_only (its job was cancelled: a chunk never begun never will be).
            if job is None or (row is not None and row["state"] != "running"):
                return False
            if row is None and begun_only:
                return False
            attempts = 0 if row is None else int(row["attempts"])
            change = settle_change(dict(job), row is not None, attempts, outcome)
            fields = {**outcome, **change.chunk}
            if row is None:
                _insert_or_ignore(db, "chunks", {"job_id": job_id, "attempts": 0, **fields})
            else:
                where = "WHERE job_id = ? AND chunk_index = ?"
                sql = f"UPDATE chunks SET {_assignments(fields)} {where}"
                db.execute(sql, (*fields.values(), *key))
            _apply(db, job_id, change)
        return True

    def _reopen(self, job_id: str, chunk_index: int) -> bool:
        key = (job_id, chunk_index)
        with self._tx() as db:
            row = _chunk_row(db, key)
            job = _tally_row(db, job_id)
            if row is None or row["state"] != "failed" or job is None:
                return False
            db.execute(
                "UPDATE chunks SET state = 'running', error = NULL, latency_ms = NULL, seq = NULL,"
                " progress = NULL, prompt_tokens = 0, completion_tokens = 0, items_failed = 0"
                " WHERE job_id = ? AND chunk_index = ?",
                key,
            )
            _apply(db, job_id, reopen_change(dict(job), dict(row)))
        return True


def _chunk_row(db: sqlite3.Connection, key: tuple[str, int]) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM chunks WHERE job_id = ? AND chunk_index = ?", key
    ).fetchone()
    return row


def _tally_row(db: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
    """The job's tally, not its spec: a settlement needs no more (and the spec may be big)."""
    row: sqlite3.Row | None = db.execute(
        f"SELECT {', '.join((*COUNTERS, *SUMMARIES))} FROM jobs WHERE job_id = ?", (job_id,)
    ).fetchone()
    return row


def _add(db: sqlite3.Connection, job_id: str, counters: Mapping[str, int]) -> None:
    sets = ", ".join(f"{name} = {name} + ?" for name in counters)
    db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", (*counters.values(), job_id))


def _apply(db: sqlite3.Connection, job_id: str, change: TallyChange) -> None:
    """The change to the job's row: inside the caller's transaction, so nothing moved since
    the row it was computed from was read."""
    sets = [f"{name} = {name} + ?" for name in change.add] + [f"{name} = ?" for name in change.put]
    db.execute(
        f"UPDATE jobs SET {', '.join(sets)} WHERE job_id = ?",
        (*change.add.values(), *change.put.values(), job_id),
    )
