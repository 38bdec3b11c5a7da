"""A Lambda handler whose init fails (its import raises), for the emulator's cold-start tests."""

from __future__ import annotations

raise ImportError("a dependency the function needs is missing")
