"""Process-wide objects the functions and the HTTP API share: settings and the job store."""

from __future__ import annotations

from functools import lru_cache

import inngest
from pydantic import ValidationError

from chunking.api_errors import describe
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.sqlite_store import SqliteJobStore


@lru_cache
def get_store() -> SqliteJobStore:
    return SqliteJobStore(get_settings().job_db_path)


def spec_from_event(data: object) -> JobSpec:
    """Validate event data as a JobSpec; bad data is never worth a retry."""
    try:
        return JobSpec.model_validate(data if data is not None else {})
    except ValidationError as err:
        raise inngest.NonRetriableError(f"invalid JobSpec in event data: {describe(err)}") from err
