"""The llm workload's own JobSpec fields: its input, how each item becomes a prompt, the model."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from chunking.settings import get_settings
from chunking.spec import Text, WholeNumber
from chunking.workload import WorkloadFields
from workloads.llm.structured import ResponseFormat


class PromptItem(BaseModel):
    """One item given in the request: an `id` and either a `prompt` or a `text`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Text = Field(min_length=1, max_length=200)
    prompt: Text | None = Field(None, min_length=1)
    text: Text | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _a_prompt_or_a_text(self) -> Self:
        if (self.prompt is None) == (self.text is None):
            raise ValueError("each item has a prompt or a text (one of them)")
        return self


class LlmFields(WorkloadFields):
    """The llm workload's own JobSpec fields."""

    # Before input_uri: its check reads whether the items were given instead.
    items: list[PromptItem] | None = Field(
        None,
        min_length=1,
        description=(
            "The items themselves, instead of input_uri: {id, prompt} or {id, text} each "
            "(within the request's 1 MiB). Kept as a JSONL input when the job is recorded."
        ),
    )
    input_uri: Text | None = Field(
        None,
        min_length=1,
        max_length=1024,
        validate_default=True,
        description="The JSONL input, a local path or s3://bucket/key (cloud: s3 only).",
    )
    prompt_template: Text | None = Field(
        None,
        min_length=1,
        max_length=20_000,
        description="Wraps each item's `text`; `{text}` marks where it goes.",
    )
    model: Text | None = Field(
        None, min_length=1, max_length=200, description="The model; default OPENAI_MODEL."
    )
    max_tokens: WholeNumber | None = Field(
        None, ge=1, le=1_000_000, description="Most completion tokens per item."
    )
    response_format: ResponseFormat | None = Field(
        None,
        description=(
            'OpenAI\'s json_schema response format, {"type": "json_schema", "json_schema": '
            '{"name", "schema", "strict"}}: sent with every request; each answer is parsed and '
            "validated against the schema, asked once more when it does not match, then that "
            "item's failure."
        ),
    )
    mode: Literal["realtime", "batch"] = Field(
        "realtime",
        description=(
            "`realtime`: each item asked at once, at full price. `batch`: each chunk one "
            "provider batch (OpenAI's Batch API), answered within 24 h at the batch discount."
        ),
    )

    @field_validator("input_uri")
    @classmethod
    def _names_an_input(cls, value: str | None, info: ValidationInfo) -> str | None:
        given = info.data.get("items") is not None
        if value is None and not given:
            raise ValueError(
                "the llm workload needs an input_uri (a JSONL file, one item a line) or items"
            )
        if value is not None and given:
            raise ValueError("give input_uri or items, not both")
        if value is None:
            return value
        if value.startswith("s3://") and "/" not in value[5:].strip("/"):
            raise ValueError(f"{value!r} names no object: use s3://bucket/key")
        return value

    @field_validator("prompt_template")
    @classmethod
    def _has_a_place_for_the_text(cls, value: str | None) -> str | None:
        if value is not None and "{text}" not in value:
            raise ValueError("must contain {text}, where each item's text goes")
        return value

    @model_validator(mode="after")
    def _a_chunk_fits_one_batch(self, info: ValidationInfo) -> Self:
        size = (info.context or {}).get("chunk_size")
        most = get_settings().llm_batch_max_requests
        if self.mode == "batch" and size is not None and size > most:
            raise ValueError(
                f"in batch mode each chunk is one provider batch, of at most {most} requests: "
                f"chunk_size={size} is too big"
            )
        return self

    @property
    def input(self) -> str:
        """`input_uri`, which validation made sure is there."""
        assert self.input_uri is not None
        return self.input_uri
