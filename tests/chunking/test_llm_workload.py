"""answer_items: per-item persistence, no second call for answered items, bad items isolated."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chunking.errors import RateLimitedError, TransientError
from chunking.spec import JobSpec
from stores.sqlite import SqliteJobStore
from tests.conftest import MODEL_RETRY_AFTER_S
from tests.llm_server import FakeModelServer
from workloads.llm.client import LlmClient
from workloads.llm.input import Item
from workloads.llm.workload import LlmChunkResult, answer_items


@pytest.fixture
def model(model_server: tuple[FakeModelServer, str]) -> tuple[FakeModelServer, LlmClient]:
    fake, url = model_server
    fake.calls.clear()
    return fake, LlmClient(api_key="k", base_url=url, model="m")


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    store.create_job("llm-job", JobSpec(total_items=4, chunk_size=4), "local")
    store.start_job("llm-job")
    return store


def run(
    store: SqliteJobStore, client: LlmClient, prompts: list[str], budget_s: float = 10
) -> LlmChunkResult:
    items = [Item(i, f"id-{i}", p) for i, p in enumerate(prompts)]
    loop = asyncio.get_event_loop()
    return loop.run_until_complete(
        answer_items(store, client, "llm-job", 0, items, budget_s=budget_s, call_timeout_s=5)
    )


def test_bad_item_is_recorded_and_its_neighbours_are_answered(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore
) -> None:
    fake, client = model
    result = run(store, client, ["one a", "[400-context] two", "three c", "[refuse] four"])
    assert (result.items_answered, result.items_failed) == (2, 2)
    kept = store.item_results("llm-job", 0)
    assert [r.output for r in kept] == ["echo: one a", None, "echo: three c", None]
    assert "context_length_exceeded" in (kept[1].error or "")
    assert result.prompt_tokens == 2 + 2 and result.completion_tokens == 3 + 3
    assert fake.calls["[400-context] two"] == 1


def test_a_retried_chunk_never_asks_an_answered_item_again(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore
) -> None:
    fake, client = model
    prompts = ["alpha x", "beta x", "[429] gamma", "delta x"]
    with pytest.raises(RateLimitedError) as info:
        run(store, client, prompts)
    assert info.value.retry_after_s == MODEL_RETRY_AFTER_S
    assert [r.id for r in store.item_results("llm-job", 0)] == ["id-0", "id-1"]  # kept at once
    # The retry: the rate limit is gone (a new prompt stands for it), answered items are skipped.
    prompts[2] = "gamma x"
    result = run(store, client, prompts)
    assert result.items_answered == 4
    assert fake.calls["alpha x"] == fake.calls["beta x"] == 1
    assert fake.calls["gamma x"] == fake.calls["delta x"] == 1


def test_a_spent_budget_stops_the_attempt_with_answers_kept(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore
) -> None:
    fake, client = model
    with pytest.raises(TransientError):
        run(store, client, ["first y", "[hang] second", "third y"], budget_s=1.5)
    assert [r.id for r in store.item_results("llm-job", 0)] == ["id-0"]
    assert fake.calls["third y"] == 0
