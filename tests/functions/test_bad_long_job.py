"""demo/bad_long_job: the anti-pattern fails at its time budget and shows the lost work."""

from __future__ import annotations

import inngest
import pytest
from inngest.experimental import mocked

from chunking.settings import get_settings
from functions.bad_long_job import bad_long_job
from functions.deps import get_store
from functions.events import BAD_LONG_JOB
from tests.support import trigger


def test_runs_out_of_budget_and_shows_lost_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAD_JOB_TIMEOUT_S", "0.3")
    get_settings.cache_clear()
    # 100 items x 10 ms = 1 s of work against a 0.3 s budget.
    data = {"job_id": "too-long", "total_items": 100, "chunk_size": 10, "item_delay_ms": 10}
    result = trigger(bad_long_job, BAD_LONG_JOB, data)
    assert result.status is mocked.Status.FAILED
    assert isinstance(result.error, inngest.NonRetriableError)  # retries=0 anyway
    assert "BAD_JOB_TIMEOUT_S" in str(result.error)

    status = get_store().status("too-long")
    assert status is not None
    assert status.status in ("partial", "failed")
    assert 0 < status.items_processed < 100
    assert status.chunks_succeeded + status.chunks_failed == status.total_chunks == 10
    lost = 100 - status.items_processed
    assert f"{lost} items are lost" in status.failed_chunks[0].error
    assert all("ran out after" in f.error for f in status.failed_chunks)


def test_job_within_budget_succeeds() -> None:
    data = {"job_id": "short", "total_items": 30, "chunk_size": 10, "item_delay_ms": 0}
    result = trigger(bad_long_job, BAD_LONG_JOB, data)
    assert result.status is mocked.Status.COMPLETED, result.error
    assert result.output == {"job_id": "short", "items_processed": 30}
    status = get_store().status("short")
    assert status is not None and status.status == "succeeded"
