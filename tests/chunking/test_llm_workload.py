"""answer_items: per-item persistence, no second call for answered items, bad items isolated."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chunking.errors import PermanentError, TransientError
from chunking.spec import JobSpec
from chunking.workload import OutOfBudget
from stores.sqlite import SqliteJobStore
from tests.conftest import MODEL_RETRY_AFTER_S
from tests.llm_server import FakeModelServer
from tests.support import set_settings
from workloads.llm.client import LlmClient
from workloads.llm.input import Item
from workloads.llm.workload import LlmChunkResult, answer_items


@pytest.fixture
def model(model_server: tuple[FakeModelServer, str]) -> tuple[FakeModelServer, LlmClient]:
    fake, url = model_server
    fake.calls.clear()
    fake.spans.clear()
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


def test_a_429_waits_what_the_server_asked_and_the_item_is_asked_again_in_the_run(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore
) -> None:
    fake, client = model
    result = run(store, client, ["alpha x", "[429x1] gamma", "delta x"], budget_s=20)
    assert result.items_answered == 3  # no failure, no retry: the same run asked it again
    assert fake.calls["[429x1] gamma"] == 2
    assert fake.calls["alpha x"] == fake.calls["delta x"] == 1
    tally = store.get_job("llm-job").tally  # type: ignore[union-attr]
    assert tally.rate_limited == 1
    assert tally.rate_wait_ms >= MODEL_RETRY_AFTER_S * 1000 * 0.9


def test_a_run_whose_time_runs_out_waiting_out_a_429_goes_on_and_never_asks_twice(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore
) -> None:
    fake, client = model
    prompts = ["alpha x", "beta x", "[429] gamma", "delta x"]
    with pytest.raises(OutOfBudget):  # a continuation: no retry spent
        run(store, client, prompts, budget_s=3)
    # Kept at once; the 429 held every request of the model, so the last one was left too.
    assert [r.id for r in store.item_results("llm-job", 0)] == ["id-0", "id-1"]
    # The next run: the limit has lifted (a new prompt stands for it); answered items skipped.
    prompts[2] = "gamma x"
    result = run(store, client, prompts)
    assert result.items_answered == 4
    assert fake.calls["alpha x"] == fake.calls["beta x"] == fake.calls["delta x"] == 1
    assert fake.calls["gamma x"] == 1


def test_a_run_that_only_waited_for_the_rate_limit_goes_on_without_spending_a_retry(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore
) -> None:
    _, client = model
    with pytest.raises(OutOfBudget, match="rate limit"):
        run(store, client, ["[429] only"], budget_s=2.5)


def test_a_spent_budget_stops_the_attempt_with_answers_kept(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore
) -> None:
    fake, client = model
    with pytest.raises(TransientError):
        run(store, client, ["first y", "[hang] second", "third y"], budget_s=1.5)
    assert [r.id for r in store.item_results("llm-job", 0)] == ["id-0"]
    assert fake.calls["third y"] == 0


def test_the_items_of_a_chunk_are_asked_at_once_each_once_and_kept_in_order(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore
) -> None:
    fake, client = model
    prompts = [f"[slow] item {i}" for i in range(8)]
    items = [Item(i, f"id-{i}", p) for i, p in enumerate(prompts)]
    asked = answer_items(
        store, client, "llm-job", 0, items, budget_s=20, call_timeout_s=5, concurrency=4
    )
    result = asyncio.get_event_loop().run_until_complete(asked)
    assert result.items_answered == 8
    assert [fake.calls[p] for p in prompts] == [1] * 8
    assert fake.peak(set(prompts)) == 4, fake.spans  # they overlapped, as many as allowed
    assert [r.output for r in store.item_results("llm-job", 0)] == [f"echo: {p}" for p in prompts]


def test_a_limit_that_never_lifts_fails_the_chunk_with_that_reason(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, client = model
    set_settings(monkeypatch, LLM_RATE_LIMIT_GIVE_UP_S="2")
    with pytest.raises(PermanentError, match="nothing but 429s"):
        run(store, client, ["fine x", "[429] always"], budget_s=20)
    # Refused, told to wait 6 s: past the bound with no answer since, it is not asked again.
    assert fake.calls["[429] always"] == 1
    assert [r.id for r in store.item_results("llm-job", 0)] == ["id-0"]


def test_a_429_storm_ends_with_every_item_answered_in_the_same_run(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore
) -> None:
    fake, client = model
    fake.storm(2.5)
    items = [Item(i, f"id-{i}", f"storm {i}") for i in range(6)]
    asked = answer_items(
        store, client, "llm-job", 0, items, budget_s=30, call_timeout_s=5, concurrency=3
    )
    result = asyncio.get_event_loop().run_until_complete(asked)
    assert result.items_answered == 6
    assert all(fake.calls[f"storm {i}"] >= 1 for i in range(6))
    tally = store.get_job("llm-job").tally  # type: ignore[union-attr]
    # Every request in flight when it began was refused; then all waited what was asked.
    assert 1 <= tally.rate_limited <= 6 and tally.rate_wait_ms >= 2_000


def test_requests_take_their_turns_in_leases_not_a_store_write_each(
    model: tuple[FakeModelServer, LlmClient], store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = model
    set_settings(monkeypatch, LLM_RATE_LIMITS='{"*": {"rpm": 6000}}')  # 100 a second
    items = [Item(i, f"id-{i}", f"lease {i}") for i in range(60)]
    asked = answer_items(
        store, client, "llm-job", 0, items, budget_s=30, call_timeout_s=5, concurrency=8
    )
    assert asyncio.get_event_loop().run_until_complete(asked).items_answered == 60
    _, writes = store._budget_row(client.budget_name)  # its version: one a write
    assert 3 <= writes <= 60 / 4  # leases of 0.2 s of the rate (20), and the last given back
