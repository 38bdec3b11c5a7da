"""A Lambda handler that blocks past any Timeout, and one that crashes, for the emulator tests."""

from __future__ import annotations

import os
import time
from typing import Any


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("sleep_s"):
        time.sleep(event["sleep_s"])  # blocking code no budget can interrupt
    if event.get("crash"):
        os._exit(1)
    return {"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis()}
