"""JOB_STORE_URL: each kind of store it names opens, and a URL naming none is refused clearly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from aws.local.resources import create_resources
from chunking.settings import Settings
from chunking.spec import JobSpec
from stores.dynamodb import DynamoJobStore
from stores.factory import open_store
from stores.postgres import PostgresJobStore
from stores.sqlite import SqliteJobStore
from tests.postgres_server import PostgresServer


@pytest.mark.parametrize(
    "url", ["mysql://db/jobs", "sqlite://", "jobs.sqlite3", "postgresql://", "dynamodb://"]
)
def test_a_url_naming_no_store_is_refused_with_the_forms_it_takes(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("JOB_STORE_URL", url)
    with pytest.raises(ValidationError, match="names no job store: give sqlite:///<file>"):
        Settings()


def test_sqlite_urls_name_a_relative_or_an_absolute_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///data/jobs.sqlite3")
    absolute = open_store(f"sqlite:///{tmp_path / 'abs.sqlite3'}")
    assert isinstance(relative, SqliteJobStore) and isinstance(absolute, SqliteJobStore)
    assert relative.path.resolve() == tmp_path / "data" / "jobs.sqlite3"
    assert absolute.path == tmp_path / "abs.sqlite3"


def test_a_postgres_url_opens_a_shared_store(postgres_server: PostgresServer) -> None:
    url = postgres_server.url()
    first, second = open_store(url), open_store(url)  # two replicas' stores, one database
    assert isinstance(first, PostgresJobStore) and isinstance(second, PostgresJobStore)
    first.create_job("shared", JobSpec(total_items=10, chunk_size=5), "local")
    job = second.get_job("shared")
    assert job is not None and job.total_chunks == 2
    first.close()
    second.close()


def test_a_dynamodb_url_names_the_table(aws_env: None) -> None:
    with mock_aws():
        stack = create_resources(boto3.client("dynamodb"), boto3.client("sqs"))
        store = open_store(f"dynamodb://{stack.table_name}")
        assert isinstance(store, DynamoJobStore) and store.table == stack.table_name
        store.create_job("on-aws", JobSpec(total_items=3, chunk_size=1), "local")
        assert store.status("on-aws") is not None


def test_a_replica_starting_beside_busy_writers_takes_no_lock(
    postgres_server: PostgresServer,
) -> None:
    """A second replica opening the store while the first is mid-settlement must not wait for
    (or deadlock with) it: the tables exist, so it creates nothing."""
    import psycopg

    url = postgres_server.url()
    first = open_store(url)
    first.create_job("busy", JobSpec(total_items=10, chunk_size=5), "local")
    with psycopg.connect(url) as writer:  # a settlement in flight: the job's row held
        writer.execute("SELECT * FROM jobs WHERE job_id = 'busy' FOR UPDATE")
        writer.execute("UPDATE jobs SET attempts = attempts + 1 WHERE job_id = 'busy'")
        pool = ThreadPoolExecutor(1)
        opening = pool.submit(open_store, url)
        try:
            second = opening.result(timeout=10)
        finally:  # let a blocked opening go on, so the test ends either way
            writer.rollback()
            pool.shutdown()
    assert isinstance(second, PostgresJobStore) and second.get_job("busy") is not None
    for store in (first, second):
        assert isinstance(store, PostgresJobStore)
        store.close()
