"""A Lambda handler whose init (its import) takes INIT_SLEEP_S seconds and, when INIT_LOG names
a file, notes there when it began and ended: for the emulator's cold-start tests."""

from __future__ import annotations

import os
import time
from typing import Any

_began = time.time()
time.sleep(float(os.environ.get("INIT_SLEEP_S", "0")))
if log := os.environ.get("INIT_LOG"):
    with open(log, "a") as f:
        f.write(f"{_began} {time.time()}\n")


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(event.get("sleep_s", 0))
    return {"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis()}
