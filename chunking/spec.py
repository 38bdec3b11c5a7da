"""JobSpec: the validated request body of `POST /jobs` and `POST /start`."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from chunking import workload
from chunking.settings import get_settings

MAX_CHUNKS = 100_000
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Priority = Literal["high", "normal", "low"]

ChunkIndex = Annotated[int, Field(ge=0)]
# Failure injection is for demos and tests: a bound keeps every spec far inside one DynamoDB
# item (400 KB) and one request body (1 MB), the same on both paths.
MAX_INJECTED_CHUNKS = 10_000
# Fields that belong to one workload (chunking.workload: each says which are its own).
WORKLOAD_FIELDS = ("input_uri", "prompt_template", "model", "max_tokens", "fail_chunks",
                   "flaky_chunks")  # fmt: skip


def _unicode_text(value: str) -> str:
    # JSON's "\ud800" decodes to a lone surrogate: no UTF-8 store or event can carry it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        message = f"is not valid Unicode text (character {err.start} is a lone surrogate)"
        raise ValueError(message) from None
    return value


Text = Annotated[str, AfterValidator(_unicode_text)]


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
    workload: str = Field(
        "simulate", description="What each chunk does: simulate, or llm (see the README)."
    )
    input_uri: Text | None = Field(
        None,
        min_length=1,
        max_length=1024,
        validate_default=True,
        description="llm: the JSONL input, a local path or s3://bucket/key (cloud: s3 only).",
    )
    prompt_template: Text | None = Field(
        None,
        validate_default=True,
        min_length=1,
        max_length=20_000,
        description="llm: wraps each item's `text`; `{text}` marks where it goes.",
    )
    model: Text | None = Field(
        None,
        validate_default=True,
        min_length=1,
        max_length=200,
        description="llm: the model; default OPENAI_MODEL.",
    )
    max_tokens: int | None = Field(
        None,
        validate_default=True,
        ge=1,
        le=1_000_000,
        description="llm: most completion tokens per item.",
    )
    item_delay_ms: int = Field(
        default_factory=lambda: get_settings().item_delay_ms, ge=0, le=60_000
    )
    priority: Priority = Field(
        "normal", description="high runs ahead of waiting normal and low chunks (both paths)."
    )
    tenant: str = Field(
        "default",
        pattern=JOB_ID_PATTERN,
        description="Whose job: each tenant's chunks share one concurrency limit (local path).",
    )
    callback_url: Text | None = Field(
        None,
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="POSTed the signed summary when the job completes (public http(s) only).",
    )
    fail_chunks: list[ChunkIndex] = Field(
        default_factory=list,
        max_length=MAX_INJECTED_CHUNKS,
        description="Chunk indexes that always fail permanently.",
    )
    flaky_chunks: dict[ChunkIndex, Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=dict,
        max_length=MAX_INJECTED_CHUNKS,
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

    @field_validator("workload")
    @classmethod
    def _known_workload(cls, name: str) -> str:
        if name not in workload.names():
            raise ValueError(f"{name!r} is no workload: use one of {', '.join(workload.names())}")
        return name

    @field_validator(*WORKLOAD_FIELDS)
    @classmethod
    def _for_its_workload(cls, value: object, info: ValidationInfo) -> object:
        """A workload's own fields: set only for it, and there when it needs them."""
        name, field = info.data.get("workload"), info.field_name
        if name is None or field is None:
            return value  # the workload field already failed: its error says why
        chosen = workload.named(name)
        if value not in (None, [], {}) and field not in chosen.fields:
            owner = workload.owner_of(field)
            raise ValueError(f"{field} applies to the {owner} workload only (only the {owner} "
                             f"workload reads it)")  # fmt: skip
        if value is None and field in chosen.required:
            raise ValueError(chosen.required[field])
        return value

    @field_validator("input_uri")
    @classmethod
    def _names_an_object(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("s3://") and "/" not in value[5:].strip("/"):
            raise ValueError(f"{value!r} names no object: use s3://bucket/key")
        return value

    @field_validator("prompt_template")
    @classmethod
    def _has_a_place_for_the_text(cls, value: str | None) -> str | None:
        if value is not None and "{text}" not in value:
            raise ValueError("must contain {text}, where each item's text goes")
        return value

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
            shown = ", ".join(map(str, bad[:10])) + (
                f" and {len(bad) - 10} more" if bad[10:] else ""
            )
            raise ValueError(
                f"chunk indexes {shown} are out of range: this job has {chunks} chunks"
            )
        return value

    @property
    def total_chunks(self) -> int:
        return chunk_count(self.total_items, self.chunk_size)
