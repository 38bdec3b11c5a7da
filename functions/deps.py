"""What the functions and the HTTP API share: the job store, and the core's errors as Inngest's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import lru_cache

import inngest
from pydantic import ValidationError

from chunking.api_errors import describe
from chunking.errors import PermanentError, RateLimitedError
from chunking.settings import get_settings
from chunking.spec import JobSpec
from stores.sqlite import SqliteJobStore


@lru_cache
def get_store() -> SqliteJobStore:
    return SqliteJobStore(get_settings().job_db_path)


@contextmanager
def inngest_retries() -> Iterator[None]:
    """PermanentError -> NonRetriableError; RateLimitedError -> RetryAfterError (the wait the
    server asked for). Anything else propagates: Inngest retries the step with backoff."""
    try:
        yield
    except PermanentError as err:
        raise inngest.NonRetriableError(str(err)) from err
    except RateLimitedError as err:
        raise inngest.RetryAfterError(
            str(err), retry_after=timedelta(seconds=err.retry_after_s)
        ) from err


def spec_from_event(data: object) -> JobSpec:
    """Validate event data as a JobSpec; bad data is never worth a retry."""
    try:
        return JobSpec.model_validate(data if data is not None else {})
    except ValidationError as err:
        raise inngest.NonRetriableError(f"invalid JobSpec in event data: {describe(err)}") from err
