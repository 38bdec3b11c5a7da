"""The local path's functions end to end: the app served over HTTP, run by the stand-in
executor over the SDK's protocol, the model the OpenAI-compatible test server."""

from __future__ import annotations

import pytest

from tests.executor import StandInExecutor
from tests.llm_server import FakeModelServer


@pytest.fixture
def executor(model: FakeModelServer, executor: StandInExecutor) -> StandInExecutor:
    """The stand-in executor, once the test model is the configured one."""
    return executor
