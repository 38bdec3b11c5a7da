"""The job store a JOB_STORE_URL names: sqlite:///path, postgresql://…, or dynamodb://table."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from chunking.settings import STORE_SCHEMES
from chunking.store import JobStore


def open_store(url: str, pool_size: int = 10) -> JobStore:
    """The store at `url`; its driver is imported only when named (psycopg, boto3)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from stores.sqlite import SqliteJobStore

        # sqlite:///data/jobs.sqlite3 is relative to the working folder; sqlite:////var/x absolute
        return SqliteJobStore(Path(parts.path.removeprefix("/") or "data/jobs.sqlite3"))
    if parts.scheme in ("postgresql", "postgres"):
        from stores.postgres import PostgresJobStore

        return PostgresJobStore(url, pool_size=pool_size)
    if parts.scheme == "dynamodb":
        from stores.dynamodb import DynamoJobStore

        return DynamoJobStore(parts.netloc)
    raise ValueError(f"JOB_STORE_URL {url!r}: the scheme must be one of {', '.join(STORE_SCHEMES)}")
