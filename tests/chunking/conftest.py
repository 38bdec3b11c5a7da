"""A job store of each kind (SQLite; DynamoDB on moto), for the tests that hold both to one
contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from aws.local.resources import create_resources
from chunking.store import JobStore
from stores.dynamodb import DynamoJobStore
from stores.sqlite import SqliteJobStore


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        yield SqliteJobStore(tmp_path / "store.sqlite3")
        return
    request.getfixturevalue("aws_env")
    request.getfixturevalue("atomic_moto")
    with mock_aws():
        stack = create_resources(boto3.client("dynamodb"), boto3.client("sqs"))
        yield DynamoJobStore(stack.table_name)
