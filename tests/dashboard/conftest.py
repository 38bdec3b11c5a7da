"""The dashboard's tests: the app with a stand-in executor running its jobs (local path), and
the cloud path's emulator for its /cloud routes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from aws.local.emulator import EmulatorProcess
from tests.support import set_settings

CLOUD_KEY = "dashboard-test-key"


@pytest.fixture(scope="session")
def cloud_emulator() -> Iterator[EmulatorProcess]:
    """The SAM stack on moto, as `make run` starts it."""
    process = EmulatorProcess(api_key=CLOUD_KEY)
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        os.environ.setdefault(name, value)
    yield process
    process.stop()


@pytest.fixture
def cloud(cloud_emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> EmulatorProcess:
    """The app's settings pointed at the emulator's API, as `make run` points them."""
    set_settings(
        monkeypatch, AWS_START_URL=f"{cloud_emulator.api}/Prod/start", CLOUD_API_KEY=CLOUD_KEY
    )
    return cloud_emulator
