from __future__ import annotations

import pytest
from pydantic import ValidationError

from chunking.spec import MAX_CHUNKS, JobSpec


def field_errors(**data: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(data)
    return {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}


def test_defaults_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from chunking.settings import get_settings

    monkeypatch.setenv("TOTAL_ITEMS", "1234")
    monkeypatch.setenv("CHUNK_SIZE", "100")
    get_settings.cache_clear()
    spec = JobSpec()
    assert (spec.total_items, spec.chunk_size, spec.total_chunks) == (1234, 100, 13)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"total_items": 0}, "total_items"),
        ({"total_items": 10_000_001}, "total_items"),
        ({"total_items": -5}, "total_items"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 100_001}, "chunk_size"),
        ({"item_delay_ms": -1}, "item_delay_ms"),
        ({"item_delay_ms": 60_001}, "item_delay_ms"),
        ({"job_id": "has space"}, "job_id"),
        ({"job_id": "x" * 65}, "job_id"),
        ({"job_id": ""}, "job_id"),
        ({"workload": "mine-bitcoin"}, "workload"),
        ({"fail_chunks": [-1]}, "fail_chunks.0"),
        ({"flaky_chunks": {"1": 0}}, "flaky_chunks.1"),
        ({"total_items": "many"}, "total_items"),
        ({"chunk_sise": 10}, "chunk_sise"),
    ],
)
def test_bad_fields_are_named(data: dict[str, object], field: str) -> None:
    assert field in field_errors(**data)


def test_too_many_chunks_names_chunk_size_and_the_fix() -> None:
    errors = field_errors(total_items=10_000_000, chunk_size=99)
    assert list(errors) == ["chunk_size"]
    assert f"at most {MAX_CHUNKS}" in errors["chunk_size"]
    assert "chunk_size must be at least 100" in errors["chunk_size"]


def test_largest_job_is_allowed() -> None:
    assert JobSpec(total_items=10_000_000, chunk_size=100).total_chunks == MAX_CHUNKS


def test_injected_chunk_indexes_must_exist() -> None:
    errors = field_errors(total_items=100, chunk_size=50, fail_chunks=[2], flaky_chunks={5: 1})
    assert "out of range" in errors["fail_chunks"]
    assert "this job has 2 chunks" in errors["flaky_chunks"]
