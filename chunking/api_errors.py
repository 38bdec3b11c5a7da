"""Request bodies and validation errors as both APIs read and report them.

- `parse_json_body`: the one reading of a JSON request body, with the same limits on both paths
  (size, UTF-8, nesting, digits, no NaN/Infinity); raises BodyError with the HTTP status.
- `field_errors` / `describe`: one entry per problem, each naming its field. Bounded: at most
  MAX_ERRORS entries, and no entry echoes more than a short prefix of what was sent, so a body
  with a million bad values cannot make a response over Lambda's 6 MB limit, and an input that
  JSON cannot carry (NaN, a lone surrogate) never breaks the error response itself.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

# The largest request body either API reads (API Gateway allows 10 MB; a JobSpec needs far less).
MAX_BODY_BYTES = 1_048_576
MAX_ERRORS = 20
MAX_MESSAGE_CHARS = 300

_preview = reprlib.Repr()  # Python 3.11's takes no arguments: set the bounds one by one
_preview.maxlevel, _preview.maxlist, _preview.maxdict = 2, 5, 5
_preview.maxstring, _preview.maxother, _preview.maxlong = 60, 60, 40


class FieldError(BaseModel):
    field: str  # as "flaky_chunks.3", or "(body)"
    message: str


class ErrorBody(BaseModel):
    """Every error answer of both APIs (what their OpenAPI documents as each 4xx and 5xx)."""

    message: str
    errors: list[FieldError] | None = None  # bad input: one entry per problem, naming its field


class BodyError(ValueError):
    """The request body cannot be read as a JSON object; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _reject_constant(name: str) -> Any:
    raise BodyError(400, f"body is not valid JSON: {name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: valid JSON, but no number a field can hold
        raise BodyError(400, f"body has a number out of range: {bounded(text, 40)}")
    return value


def parse_json_body(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is empty (every field then has its default)."""
    if len(raw) > MAX_BODY_BYTES:
        raise BodyError(413, f"body is {len(raw)} bytes; at most {MAX_BODY_BYTES} are accepted")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BodyError(400, f"body is not UTF-8 text (byte {err.start})") from err
    if not text.strip():
        return None
    try:
        payload = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except BodyError:
        raise
    except RecursionError as err:
        raise BodyError(400, "body is not a JobSpec: JSON nested too deeply") from err
    except json.JSONDecodeError as err:
        raise BodyError(400, f"body is not valid JSON: {err.msg} (char {err.pos})") from err
    except ValueError as err:  # Python refuses integers of more than 4,300 digits
        raise BodyError(400, "body is not valid JSON: a number has too many digits") from err
    if not isinstance(payload, dict):
        raise BodyError(400, "body must be a JSON object (a JobSpec)")
    return payload


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, lone surrogates escaped (JSON and UTF-8 can carry it)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def preview(value: Any) -> str:
    """A short, always-serialisable picture of a value someone sent."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return bounded(_preview.repr(value), 100)


def _field(loc: tuple[int | str, ...]) -> str:
    return bounded(".".join(str(p) for p in loc), 100) or "(body)"


def field_errors(err: ValidationError | Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """`{field, message}` per problem, at most MAX_ERRORS of them (then how many more)."""
    errors = (
        err.errors(include_url=False, include_context=False, include_input=False)
        if isinstance(err, ValidationError)
        else err
    )
    shown = [
        {"field": _field(tuple(e["loc"])), "message": bounded(str(e["msg"]))}
        for e in errors[:MAX_ERRORS]
    ]
    if len(errors) > MAX_ERRORS:
        more = len(errors) - MAX_ERRORS
        shown.append({"field": "(body)", "message": f"and {more} more problems not shown"})
    return shown


def describe(err: ValidationError) -> str:
    """One line: `total_items: Input should be ...; chunk_size: ...`."""
    return "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(err))


def invalid_spec(err: ValidationError) -> dict[str, Any]:
    """The body of both APIs' 400 for a JobSpec that cannot run (the README's error contract)."""
    return {"message": f"invalid JobSpec: {describe(err)}", "errors": field_errors(err)}


def invalid_request(errors: list[dict[str, str]]) -> dict[str, Any]:
    """The body of both APIs' 400 for a request they cannot use, from its `field_errors`."""
    listed = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return {"message": f"invalid request: {listed}", "errors": errors}


def invalid_field(field: str, message: str) -> dict[str, Any]:
    """`invalid_request` for one field."""
    return invalid_request([{"field": field, "message": message}])


def invalid_query(err: ValidationError) -> dict[str, Any]:
    """The body of both APIs' 400 for query parameters they cannot use."""
    return {"message": f"invalid query: {describe(err)}", "errors": field_errors(err)}
