"""A model's shared budget on every store: leases taken at once by many threads and by many
processes never grant more than the rate and its burst, in any window."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from aws.local.moto_server import MotoServer
from aws.local.resources import create_resources
from chunking.budget import LeaseAsk, Limits
from chunking.store import JobStore
from stores.factory import open_store
from tests.postgres_server import PostgresServer

LIMITS = Limits(rpm=1_200, tpm=60_000)  # 20 requests and 1,000 tokens a second
BURST_S = 0.5
ASK = LeaseAsk(requests=2, tokens=60)
Granted = list[tuple[float, int, int]]  # (ready_at, requests, tokens) of each lease


def take_leases(store: JobStore, name: str, count: int) -> Granted:
    granted = []
    for _ in range(count):
        lease = store.take_lease(name, ASK, LIMITS, BURST_S)
        assert lease.requests == ASK.requests  # nothing limits how far ahead it may be ready
        granted.append((lease.ready_at, lease.requests, lease.tokens))
    return granted


def take_leases_in_a_process(url: str, name: str, count: int) -> Granted:
    return take_leases(open_store(url, pool_size=2), name, count)


def assert_within_the_limit(granted: Granted) -> None:
    """In every window [a, b] between two grants, what was granted is at most the rate over
    it and one burst (the bucket is full at the start)."""
    granted = sorted(granted)
    per_s = {1: LIMITS.rpm / 60, 2: LIMITS.tpm / 60}  # type: ignore[operator]
    for i, (start, *_) in enumerate(granted):
        totals = [0, 0, 0]
        for end, requests, tokens in granted[i:]:
            totals[1] += requests
            totals[2] += tokens
            for what in (1, 2):
                allowed = per_s[what] * ((end - start) + BURST_S)
                # (to float precision: instants are epoch seconds)
                assert totals[what] <= allowed + 1e-3, (what, start, end, totals, allowed)


def test_concurrent_leases_by_threads_never_overdraw_the_bucket(store: JobStore) -> None:
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda _: take_leases(store, "m@threads", 15), range(8)))
    granted = [lease for run in runs for lease in run]
    assert len(granted) == 120
    assert_within_the_limit(granted)


@pytest.fixture
def moto_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A job table on a moto server of its own, which the processes reach through the
    environment they inherit (one call at a time, as DynamoDB applies a conditional write)."""
    server = MotoServer(0)
    server.start()
    for name, value in {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    try:
        yield create_resources(boto3.client("dynamodb"), boto3.client("sqs")).table_name
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "dynamodb"])
def test_concurrent_leases_by_processes_never_overdraw_the_bucket(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    elif kind == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.url()
    else:
        url = f"dynamodb://{request.getfixturevalue('moto_table')}"
    open_store(url)  # its schema, made once before the processes race for it
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        runs = list(pool.map(take_leases_in_a_process, [url] * 4, ["m@procs"] * 4, [20] * 4))
    granted = [lease for run in runs for lease in run]
    assert len(granted) == 80
    assert_within_the_limit(granted)


def test_a_lease_given_back_is_granted_again(store: JobStore) -> None:
    first = store.take_lease("m@back", LeaseAsk(requests=20), Limits(rpm=1_200), BURST_S)
    late = store.take_lease("m@back", LeaseAsk(requests=1), Limits(rpm=1_200), BURST_S)
    back = LeaseAsk(requests=1, returned_requests=10)
    sooner = store.take_lease("m@back", back, Limits(rpm=1_200), BURST_S)
    assert first.requests == 20 and late.ready_at > first.ready_at
    assert sooner.ready_at < late.ready_at + 1 / 20  # ten slots back: it did not queue behind
