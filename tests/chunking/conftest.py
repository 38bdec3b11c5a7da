"""A job store of each kind (SQLite; Postgres, a real server; DynamoDB on moto), for the tests
that hold all three to one contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from aws.local.resources import create_resources
from chunking.store import JobStore
from stores.dynamodb import DynamoJobStore
from stores.postgres import PostgresJobStore
from stores.sqlite import SqliteJobStore
from tests.postgres_server import PostgresServer


@pytest.fixture(params=["sqlite", "postgres", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        yield SqliteJobStore(tmp_path / "store.sqlite3")
        return
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        store = PostgresJobStore(server.url())
        yield store
        store.close()
        return
    request.getfixturevalue("aws_env")
    request.getfixturevalue("atomic_moto")
    with mock_aws():
        stack = create_resources(boto3.client("dynamodb"), boto3.client("sqs"))
        yield DynamoJobStore(stack.table_name)
