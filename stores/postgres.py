"""Postgres job store: one database shared by every replica of the local path's app.

psycopg 3 with a connection pool. The conditional writes are `stores.sql`'s, as on SQLite;
what differs is the locking: many processes write at once, so a transaction that decides from
a job's chunk and tally holds the job's row (`SELECT … FOR UPDATE`) until it commits. Two
deliveries of one chunk, on two replicas, then settle it once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from stores.base import Row
from stores.sql import (
    ACTIVE_SINCE_START,
    INDEXES,
    LATER_COLUMNS,
    SCHEMA,
    Cursor,
    SqlJobStore,
)

# Serialises two replicas creating the tables at once (CREATE … IF NOT EXISTS is not safe
# against a concurrent create of the same name).
SCHEMA_LOCK = 7_242_001
# What SCHEMA and INDEXES create.
SCHEMA_NAMES = (
    "jobs",
    "chunks",
    "items",
    "jobs_created_at",
    "items_by_chunk",
    "chunks_by_seq",
    "chunks_by_state",
    "claims",
    "claims_by_expiry",
    "jobs_by_activity",
    "budgets",
    "chunks_batched",
    "items_failed",
    "jobs_by_tenant",  # the last added: a database without it lacks the columns added with it
)


class _Db:
    """A connection that takes the `?` placeholders stores.sql writes (psycopg's are `%s`)."""

    def __init__(self, conn: Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor:
        return self.conn.execute(sql.replace("?", "%s"), params)


class PostgresJobStore(SqlJobStore):
    """JobStore on a Postgres database (`postgresql://user:password@host:port/dbname`)."""

    LOCK_ROW = " FOR UPDATE"

    def __init__(self, url: str, pool_size: int = 10) -> None:
        super().__init__()
        self.url = url
        self.pool: ConnectionPool[Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"row_factory": dict_row},
            open=True,
            name="job-store",
        )
        if not self._has_schema():
            with self._tx() as db:
                db.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
                ddl = SCHEMA.format(int="BIGINT", real="DOUBLE PRECISION", keyed="")
                added = (
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} "
                    + declaration.format(int="BIGINT")
                    for table, column, declaration in LATER_COLUMNS
                )
                # The jobs of before the tenant column: whose their spec says.
                tenants = "UPDATE jobs SET tenant = spec::jsonb->>'tenant' WHERE tenant IS NULL"
                statements = (*ddl.split(";"), *added, ACTIVE_SINCE_START, tenants, *INDEXES)
                for statement in statements:
                    if statement.strip():
                        db.execute(statement)

    def _has_schema(self) -> bool:
        """Every table and index there already? Then a replica starting takes no lock at all:
        even CREATE INDEX IF NOT EXISTS locks its table first, which can deadlock with the
        other replicas' settlements."""
        found = self._select(
            "SELECT count(to_regclass(name)) AS n FROM unnest(?::text[]) name", list(SCHEMA_NAMES)
        )
        return int(found[0]["n"]) == len(SCHEMA_NAMES)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _transaction(self) -> Iterator[_Db]:
        # The pool's connection commits when the block ends, and rolls back on an error.
        with self.pool.connection() as conn:
            yield _Db(conn)

    def _select(self, sql: str, *params: Any) -> list[Row]:
        with self._tx() as db:
            return list(db.execute(sql, params).fetchall())
