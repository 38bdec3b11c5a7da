"""Checked structured answers: a job's `response_format`, OpenAI's `json_schema` response format.

The schema itself is checked when the job is submitted (a bad one is a 400 naming
`response_format`). The format is sent with every request, realtime and in a batch; every
answer is parsed as JSON and validated against the schema (`mismatch`). An answer that does not
validate is asked once more (realtime at once, in a batch in the chunk's next round), then it is
the item's failure with the validation error (`checked` decides, for both ways): an item is
asked at most MAX_ASKS times, and the tokens of every ask are counted.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from chunking.status import ItemResult

MAX_ASKS = 2  # an answer that does not match is asked once more, never again
MISMATCH = "response did not match response_format"


class JsonSchema(BaseModel):
    """`json_schema`: the schema and its name, as the openai SDK's `JSONSchema` has them."""

    # `schema` is BaseModel's own name: the field is `schema_`, spelled `schema` in JSON.
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a-z, A-Z, 0-9, _ or -")
    description: str | None = Field(None, max_length=10_000)
    schema_: dict[str, Any] = Field(
        alias="schema", description="A JSON Schema (draft 2020-12) every answer must match."
    )
    strict: StrictBool | None = None  # lax, "yes" and 1 would be true

    @field_validator("schema_")
    @classmethod
    def _is_a_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as err:
            where = "/".join(str(part) for part in err.absolute_path)
            raise ValueError(
                f"not a valid JSON schema: {err.message}{f' (at {where})' if where else ''}"
            ) from None
        return value


class ResponseFormat(BaseModel):
    """`{"type": "json_schema", "json_schema": {"name", "schema", "strict"?}}`."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)
    type: Literal["json_schema"]
    json_schema: JsonSchema

    def request(self) -> dict[str, Any]:
        """As a request's `response_format`."""
        return self.model_dump(exclude_none=True)

    def mismatch(self, output: str) -> str | None:
        """Why the answer does not match the schema (not JSON, or not valid), or None."""
        try:
            data = json.loads(output)
        except ValueError as err:
            return f"{MISMATCH}: not JSON ({err})"
        found = best_match(_validator(_key(self.json_schema.schema_)).iter_errors(data))
        if found is None:
            return None
        where = "/".join(str(part) for part in found.absolute_path)
        return f"{MISMATCH}: {found.message}{f' (at {where})' if where else ''}"


def _key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)


@lru_cache(maxsize=64)
def _validator(schema: str) -> Draft202012Validator:
    """One compiled validator per schema, shared by a process's chunks."""
    return Draft202012Validator(json.loads(schema))


def checked(
    result: ItemResult, response_format: ResponseFormat | None, first: ItemResult | None
) -> tuple[ItemResult, bool]:
    """An answer's result checked against the format, with an earlier ask's tokens and count
    added when this is the second ask (`first`: the earlier ask's mismatch): `(result, again)`,
    `again` when it is a first mismatch, to ask once more (its result holds the mismatch)."""
    if first is not None:
        result = replace(
            result,
            prompt_tokens=result.prompt_tokens + first.prompt_tokens,
            completion_tokens=result.completion_tokens + first.completion_tokens,
            attempts=first.attempts + 1,
        )
    if response_format is None or result.error is not None:
        return result, False
    mismatch = response_format.mismatch(result.output or "")
    if mismatch is None:
        return result, False
    missed = replace(result, output=None, error=mismatch)
    return missed, missed.attempts < MAX_ASKS
