"""The local path's functions end to end: the app served over HTTP, run by the stand-in
executor over the SDK's protocol, the model the OpenAI-compatible test server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.executor import StandInExecutor, serving
from tests.llm_server import FakeModelServer
from tests.support import FakeInngestApi


@pytest.fixture
def executor(
    model: FakeModelServer, api: httpx.Client, fake_inngest: FakeInngestApi
) -> Iterator[StandInExecutor]:
    with serving(api, fake_inngest) as running:
        yield running
