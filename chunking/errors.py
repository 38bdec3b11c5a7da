"""Error taxonomy: every platform adapter maps these three kinds to its own retry mechanism."""

from __future__ import annotations


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
