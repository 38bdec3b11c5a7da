"""Error taxonomy: every platform adapter maps these three kinds to its own retry mechanism.

`retry_after_s` reads how long a server asked us to wait (a 429's Retry-After), for every
client of ours that can be rate-limited: the model, callback receivers, the cloud API.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

DEFAULT_RETRY_AFTER_S = 10.0


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
