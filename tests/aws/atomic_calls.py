"""One AWS call at a time, as each call is atomic in the real services.

In-process moto is not thread-safe: two conditional writes (or two counter updates in
transactions) racing from worker threads can both apply to the same old state, which DynamoDB
never allows. The worker runs records in threads, so tests against in-process moto wrap
botocore's call in one lock. Plain Python on purpose: built_artifact_check loads it by path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def one_at_a_time(real_call: Callable[..., Any]) -> Callable[..., Any]:
    lock = threading.Lock()

    def call(self: Any, operation: str, params: Any) -> Any:
        with lock:
            return real_call(self, operation, params)

    return call
