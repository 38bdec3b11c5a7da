"""The sweep of stalled jobs on every store: which jobs it looks at, which chunks it sends again,
how far one call reads, and that a job's lost chunks end up run or recorded failed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chunking import recovery
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.store import JobStore
from stores.sqlite import SqliteJobStore
from tests.support import set_settings

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
IDLE = timedelta(seconds=900)  # SWEEP_IDLE_S's default


class Clock:
    """The store's clock, moved by the test."""

    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock()
    monkeypatch.setattr(store, "now", clock)
    yield clock


def running_job(store: JobStore, chunks: int) -> str:
    job_id = f"sweep-{uuid.uuid4().hex[:10]}"
    store.create_job(job_id, JobSpec(total_items=chunks, chunk_size=1, tenant="acme"), "local")
    assert store.start_job(job_id)
    return job_id


def settle(store: JobStore, job_id: str, index: int) -> None:
    assert store.begin_attempt(job_id, index) is not None
    store.settle_chunk(job_id, index, succeeded=True, items=1)


def lost_of(store: JobStore, now: datetime) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for chunk in recovery.sweep(store, now):
        found.setdefault(chunk.job_id, []).append(chunk.chunk_index)
    return found


def test_only_running_jobs_idle_past_the_limit_are_stalled(store: JobStore, clock: Clock) -> None:
    idle = running_job(store, 3)
    settle(store, idle, 0)
    busy = running_job(store, 3)
    ended = running_job(store, 1)
    settle(store, ended, 0)  # finished
    cancelled = running_job(store, 2)
    store.cancel_job(cancelled)
    queued = f"queued-{uuid.uuid4().hex[:8]}"
    store.create_job(queued, JobSpec(total_items=2, chunk_size=1), "local")

    clock.at = T0 + timedelta(minutes=10)
    settle(store, busy, 0)  # showed life 10 minutes in
    clock.at = T0 + timedelta(minutes=16)
    stalled = [job.job_id for job in store.stalled_jobs(clock.at - IDLE, 100)]
    assert idle in stalled
    assert busy not in stalled and ended not in stalled and cancelled not in stalled
    assert queued not in stalled
    # A chunk that settles after its job was cancelled does not make it stalled either.
    clock.at = T0 + timedelta(minutes=40)
    assert busy in [job.job_id for job in store.stalled_jobs(clock.at - IDLE, 100)]
    assert cancelled not in [job.job_id for job in store.stalled_jobs(clock.at - IDLE, 100)]


def test_the_longest_idle_come_first_and_the_limit_holds(store: JobStore, clock: Clock) -> None:
    first = running_job(store, 1)
    clock.at = T0 + timedelta(minutes=2)
    second = running_job(store, 1)
    clock.at = T0 + timedelta(minutes=30)
    found = [job.job_id for job in store.stalled_jobs(clock.at - IDLE, 100)]
    assert found.index(first) < found.index(second)
    assert len(store.stalled_jobs(clock.at - IDLE, 1)) == 1


def test_a_stalled_job_gets_its_lost_chunks_again_and_nothing_else(
    store: JobStore, clock: Clock
) -> None:
    job_id = running_job(store, 6)
    settle(store, job_id, 0)  # done
    store.begin_attempt(job_id, 1)  # its run was lost (the process died, its retries too)
    store.settle_chunk(job_id, 2, succeeded=False, error="permanent: no")  # failed, for good
    # 3, 4 and 5 never began: every delivery of their runs failed.
    clock.at = T0 + timedelta(minutes=5)
    assert lost_of(store, clock.at) == {}  # not idle long enough: left alone
    clock.at = T0 + timedelta(minutes=16)
    lost = recovery.sweep(store, clock.at)
    assert [(c.chunk_index, c.sweep, c.give_up) for c in lost if c.job_id == job_id] == [
        (1, 1, False), (3, 1, False), (4, 1, False), (5, 1, False)
    ]  # fmt: skip
    assert {(c.priority, c.tenant) for c in lost if c.job_id == job_id} == {("normal", "acme")}
    status = store.status(job_id)
    assert status is not None and status.chunks_resent == 4
    # The same pass never sends a chunk twice; the next waits a whole idle period.
    clock.at = T0 + timedelta(minutes=17)
    assert job_id not in lost_of(store, clock.at)
    clock.at = T0 + timedelta(minutes=32)
    assert lost_of(store, clock.at)[job_id] == [1, 3, 4, 5]
    # Once its chunks run, the job shows life and is left alone.
    settle(store, job_id, 3)
    clock.at = T0 + timedelta(minutes=47)
    assert job_id not in lost_of(store, clock.at)


def test_a_chunk_begun_since_the_job_went_idle_is_not_lost(store: JobStore, clock: Clock) -> None:
    job_id = running_job(store, 2)
    clock.at = T0 + timedelta(minutes=15, seconds=30)
    store.begin_attempt(job_id, 0)  # the job's life is kept to the minute: 12:15:00
    clock.at = T0 + timedelta(minutes=30, seconds=10)
    # Idle since 12:15:10 by the minute it keeps, but chunk 0 began at 12:15:30: not lost.
    assert lost_of(store, clock.at)[job_id] == [1]


def test_one_call_reads_a_window_and_a_pass_goes_on_where_it_stopped(
    store: JobStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_settings(monkeypatch, SWEEP_WINDOW="10")
    job_id = running_job(store, 35)
    for index in range(0, 35, 2):
        settle(store, job_id, index)  # every other chunk done; the odd ones never began
    reads: list[int] = []
    real_page = store.chunk_page

    def page(*args: Any, **kwargs: Any) -> Any:
        rows = real_page(*args, **kwargs)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(store, "chunk_page", page)
    sent: list[int] = []
    for minute in range(16, 30):
        clock.at = T0 + timedelta(minutes=minute)
        sent += lost_of(store, clock.at).get(job_id, [])
    assert sent == list(range(1, 35, 2))  # each lost chunk once, in order, in one pass
    assert reads and max(reads) <= 10  # no call read more than its window
    job = store.get_job(job_id)
    assert job is not None and job.liveness.after is None and job.liveness.passes == 1


def test_after_its_sweeps_a_lost_chunk_is_given_up(store: JobStore, clock: Clock) -> None:
    job_id = running_job(store, 2)
    settle(store, job_id, 0)
    bound = get_settings().chunk_max_resends
    given_up = []
    for n in range(1, bound + 3):
        clock.at = T0 + n * (IDLE + timedelta(minutes=1))
        for chunk in recovery.sweep(store, clock.at):
            if chunk.job_id == job_id:
                assert chunk.sweep == n
                given_up.append(chunk.give_up)
                if chunk.give_up:  # what the adapter does with it: record it failed
                    store.settle_chunk(job_id, 1, succeeded=False, error="lost")
    assert given_up == [False] * bound + [True]
    status = store.status(job_id)
    assert status is not None and (status.status, status.chunks_resent) == ("partial", bound)


def test_the_job_row_records_the_sweep_only_while_it_runs(store: JobStore, clock: Clock) -> None:
    job_id = running_job(store, 1)
    assert store.record_sweep(job_id, passes=1, after=None, swept_at=T0, resent=1)
    store.cancel_job(job_id)
    assert not store.record_sweep(job_id, passes=2, after=None, swept_at=T0, resent=1)
    status = store.status(job_id)
    assert status is not None and status.chunks_resent == 1


def test_a_running_job_from_before_the_sweep_is_swept_as_of_its_start(tmp_path: Path) -> None:
    """A SQLite file an earlier version wrote (no `active_at`): its running jobs show life as of
    their start once the store opens it, so the sweep finds them."""
    file = tmp_path / "old.sqlite3"
    old = SqliteJobStore(file)
    old.create_job("old", JobSpec(total_items=2, chunk_size=1), "local")
    assert old.start_job("old")
    with old._transaction() as db:  # back to the earlier schema
        db.execute("DROP INDEX jobs_by_activity")
        for column in ("active_at", "sweep_passes", "sweep_after", "swept_at"):
            db.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    store = SqliteJobStore(file)
    job = store.get_job("old")
    assert job is not None and job.liveness.active_at == job.started_at
    later = datetime.now(UTC) + IDLE + timedelta(minutes=1)
    assert [j.job_id for j in store.stalled_jobs(later - IDLE, 10)] == ["old"]
