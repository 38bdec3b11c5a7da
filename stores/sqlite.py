"""SQLite job store: the embedded default for the local path (WAL, one connection per thread)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stores.base import Row
from stores.sql import ACTIVE_SINCE_START, INDEXES, LATER_COLUMNS, SCHEMA, SqlJobStore

KEYED = " WITHOUT ROWID"  # chunks and items are read by their key: no rowid to keep beside it
_COUNT = "INTEGER NOT NULL DEFAULT 0"

# (table, column, type) added after the first release, for _migrate.
ADDED_COLUMNS = [
    ("jobs", "output_uri", "TEXT"),
    ("jobs", "events_seq", _COUNT),
    ("chunks", "seq", "INTEGER"),
    *(
        ("jobs", name, _COUNT)
        for name in (
            "total_items",
            "chunks_succeeded",
            "chunks_failed",
            "chunks_running",
            "chunks_begun",
            "attempts",
            "items_processed",
            "prompt_tokens",
            "completion_tokens",
            "items_failed",
            "version",
            "chunks_resent",
        )
    ),
    ("jobs", "latency", "TEXT"),
    ("jobs", "failed_head", "TEXT"),
    *(
        ("chunks", name, _COUNT)
        for name in ("prompt_tokens", "completion_tokens", "items_failed", "continuations")
    ),
    ("chunks", "progress", "TEXT"),
    ("chunks", "timeline", "TEXT"),
    ("items", "output_uri", "TEXT"),
    *((table, column, ddl.format(int="INTEGER")) for table, column, ddl in LATER_COLUMNS),
]

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


class SqliteJobStore(SqlJobStore):
    """JobStore on one SQLite file; safe to share between threads."""

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # This process's writers take turns on a lock, woken the moment it is free: SQLite's
        # own busy handler (still what waits for other processes) sleeps 1, 2, 5 ... 100 ms
        # between tries, which under many concurrent requests is most of their wait.
        self._write_lock = threading.Lock()
        self._conn().executescript(SCHEMA.format(int="INTEGER", real="REAL", keyed=KEYED))
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns later versions introduced to a file an earlier version created."""
        with self._transaction() as db:
            added = set()
            for table, column, ddl in ADDED_COLUMNS:
                columns = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
                    added.add((table, column))
            if ("jobs", "chunks_succeeded") in added:
                db.execute(RECOUNT)
            if ("jobs", "active_at") in added:
                db.execute(ACTIVE_SINCE_START)
            if ("jobs", "tenant") in added:  # the jobs of before: whose their spec says
                db.execute("UPDATE jobs SET tenant = json_extract(spec, '$.tenant')")
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
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        # IMMEDIATE takes the write lock up front, so read-then-write decisions can't race.
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _select(self, sql: str, *params: Any) -> list[Row]:
        return [dict(row) for row in self._conn().execute(sql, params).fetchall()]
