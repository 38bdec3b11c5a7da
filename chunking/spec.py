"""JobSpec: the validated request body of `POST /jobs` and `POST /start`."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from chunking.settings import get_settings

MAX_CHUNKS = 100_000
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

ChunkIndex = Annotated[int, Field(ge=0)]


def new_job_id() -> str:
    """A fresh job id that matches JOB_ID_PATTERN."""
    return uuid.uuid4().hex


def chunk_count(total_items: int, chunk_size: int) -> int:
    return -(-total_items // chunk_size)


class JobSpec(BaseModel):
    """What to run. Unknown fields are rejected so a typo never silently changes a job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str | None = Field(
        None,
        pattern=JOB_ID_PATTERN,
        description="Idempotency key: the same job_id twice starts one job.",
    )
    total_items: int = Field(
        default_factory=lambda: get_settings().total_items, ge=1, le=10_000_000
    )
    chunk_size: int = Field(default_factory=lambda: get_settings().chunk_size, ge=1, le=100_000)
    workload: Literal["simulate"] = "simulate"
    item_delay_ms: int = Field(
        default_factory=lambda: get_settings().item_delay_ms, ge=0, le=60_000
    )
    fail_chunks: list[ChunkIndex] = Field(
        default_factory=list, description="Chunk indexes that always fail permanently."
    )
    flaky_chunks: dict[ChunkIndex, Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=dict,
        description="Chunk index -> how many attempts fail transiently before one succeeds.",
    )

    @field_validator("chunk_size")
    @classmethod
    def _not_too_many_chunks(cls, chunk_size: int, info: ValidationInfo) -> int:
        total = info.data.get("total_items")
        if total is not None and chunk_count(total, chunk_size) > MAX_CHUNKS:
            raise ValueError(
                f"total_items={total} with chunk_size={chunk_size} makes "
                f"{chunk_count(total, chunk_size)} chunks; at most {MAX_CHUNKS} are allowed, "
                f"so chunk_size must be at least {chunk_count(total, MAX_CHUNKS)}"
            )
        return chunk_size

    @field_validator("fail_chunks", "flaky_chunks")
    @classmethod
    def _indexes_in_range(
        cls, value: list[int] | dict[int, int], info: ValidationInfo
    ) -> list[int] | dict[int, int]:
        total, size = info.data.get("total_items"), info.data.get("chunk_size")
        if total is None or size is None:
            return value  # the size fields already failed; their errors say why
        chunks = chunk_count(total, size)
        bad = sorted(i for i in value if i >= chunks)
        if bad:
            raise ValueError(f"chunk indexes {bad} are out of range: this job has {chunks} chunks")
        return value

    @property
    def total_chunks(self) -> int:
        return chunk_count(self.total_items, self.chunk_size)
