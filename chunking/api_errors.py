"""Validation errors as the APIs report them: one entry per problem, each naming its field."""

from __future__ import annotations

from pydantic import ValidationError


def field_errors(err: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
        for e in err.errors()
    ]


def describe(err: ValidationError) -> str:
    """One line: `total_items: Input should be ...; chunk_size: ...`."""
    return "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(err))
