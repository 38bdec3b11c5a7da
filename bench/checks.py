"""A benchmark's verdict: its checks printed ok / NOT, then PASS or FAIL (exit 1, keeping what
is needed to look into it)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def verdict(checks: dict[str, bool], folder: Path, kept: str) -> None:
    """Print each check and PASS or FAIL. On FAIL `folder` (`kept` says what it holds) stays
    for a look and the process exits 1; on PASS it is removed."""
    for name, ok in checks.items():
        print(f"  {'ok ' if ok else 'NOT'} {name}")
    print("PASS" if all(checks.values()) else "FAIL")
    if not all(checks.values()):
        print(f"({kept} are kept in {folder})")
        sys.exit(1)
    shutil.rmtree(folder, ignore_errors=True)
