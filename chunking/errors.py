"""Error taxonomy: every platform adapter maps these three kinds to its own retry mechanism.

`retry_after_s` reads how long a server asked us to wait (a 429's Retry-After), for every
client of ours that can be rate-limited: the model, callback receivers, the cloud API.
`backoff_s` is the one wait before a retry of anything else, the same on both paths (locally
through Inngest's RetryAfterError, in the cloud through the message's visibility), so the
paths compare as orchestrators, not as two retry policies.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

DEFAULT_RETRY_AFTER_S = 10.0


def backoff_s(failures: int) -> float:
    """Seconds to wait after the `failures`-th failed run in a row (1, 2, ...): the settings'
    RETRY_BACKOFF_BASE_S x RETRY_BACKOFF_FACTOR^(failures - 1), at most RETRY_BACKOFF_MAX_S."""
    from chunking.settings import get_settings  # settings import nothing of ours back

    settings = get_settings()
    wait = settings.retry_backoff_base_s * settings.retry_backoff_factor ** max(failures - 1, 0)
    return float(min(wait, settings.retry_backoff_max_s))


class ChunkError(Exception):
    """Base class: a chunk attempt did not succeed."""


class PermanentError(ChunkError):
    """Retrying cannot help (bad input, refused request): fail the chunk now."""


class TransientError(ChunkError):
    """May succeed on another attempt (timeout, 5xx, connection reset): retry with backoff."""


class RateLimitedError(TransientError):
    """The server asked us to wait `retry_after_s` seconds before trying again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InputUnavailableError(OSError):
    """A job's input cannot be read now (its store did not answer): not the caller's fault,
    worth trying again (the APIs answer 503; a chunk retries)."""


def retry_after_s(headers: Mapping[str, str]) -> float:
    """Seconds to wait, from `retry-after-ms`, or `retry-after` in seconds or as an HTTP date."""
    if value := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER_S
