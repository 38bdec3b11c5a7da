"""What the functions and the HTTP API share: the job store, and the core's errors as Inngest's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import lru_cache

import inngest
from pydantic import ValidationError

from chunking.api_errors import describe
from chunking.errors import PermanentError, RateLimitedError, backoff_s
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.store import JobStore
from stores.factory import open_store


@lru_cache
def get_store() -> JobStore:
    settings = get_settings()
    return open_store(settings.job_store_url, pool_size=settings.job_store_pool_size)


@contextmanager
def inngest_retries(attempt: int) -> Iterator[None]:
    """The core's errors as Inngest's, for a run on its `attempt` (0 for the first):
    PermanentError -> NonRetriableError; RateLimitedError -> RetryAfterError (the wait the
    server asked for); anything else -> RetryAfterError after our backoff, the same schedule
    as the cloud path's (not Inngest's own, which waits far longer)."""
    try:
        yield
    except (inngest.NonRetriableError, inngest.RetryAfterError):
        raise
    except PermanentError as err:
        raise inngest.NonRetriableError(str(err)) from err
    except RateLimitedError as err:
        raise inngest.RetryAfterError(
            str(err), retry_after=timedelta(seconds=err.retry_after_s)
        ) from err
    except Exception as err:
        wait = timedelta(seconds=backoff_s(attempt + 1))
        raise inngest.RetryAfterError(f"{type(err).__name__}: {err}", retry_after=wait) from err


def spec_from_event(data: object) -> JobSpec:
    """Validate event data as a JobSpec; bad data is never worth a retry."""
    try:
        return JobSpec.model_validate(data if data is not None else {})
    except ValidationError as err:
        raise inngest.NonRetriableError(f"invalid JobSpec in event data: {describe(err)}") from err
