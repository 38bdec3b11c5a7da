"""workloads.llm.client through the real openai SDK, against the local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from chunking.budget import Observation
from chunking.errors import PermanentError, RateLimitedError, TransientError, retry_after_s
from tests.llm_server import FakeModelServer
from tests.support import ServerThread
from workloads.llm.client import Completion, LlmClient
from workloads.llm.ratelimit import observe


@pytest.fixture(scope="module")
def model() -> Iterator[tuple[FakeModelServer, LlmClient]]:
    fake = FakeModelServer(retry_after="7", hang_s=5)
    server = ServerThread(fake.app).start()
    client = LlmClient(api_key="test-key", base_url=f"{server.url}/v1", model="test-model")
    yield fake, client
    server.stop()


def complete(client: LlmClient, prompt: str, timeout_s: float = 5) -> Completion:
    # The session's one loop: the SDK's pooled connections belong to the loop that opened them.
    loop = asyncio.get_event_loop()
    return loop.run_until_complete(client.complete(prompt, timeout_s=timeout_s))


def test_answer_with_usage(model: tuple[FakeModelServer, LlmClient]) -> None:
    _, client = model
    answer = complete(client, "say hello")
    assert answer.output == "echo: say hello"
    assert (answer.prompt_tokens, answer.completion_tokens) == (2, 3)
    assert answer.latency_ms is not None and answer.latency_ms > 0


def test_429_is_rate_limited_with_the_servers_retry_after(
    model: tuple[FakeModelServer, LlmClient],
) -> None:
    fake, client = model
    with pytest.raises(RateLimitedError, match="rate_limit_exceeded") as info:
        complete(client, "[429] busy")
    assert info.value.retry_after_s == 7
    assert fake.calls["[429] busy"] == 1  # the SDK did not retry on its own


@pytest.mark.parametrize(
    ("prompt", "error", "text"),
    [
        ("[500] oops", TransientError, "500"),
        ("[400-context] too long", PermanentError, "400 context_length_exceeded"),
        ("[401] who", PermanentError, "401 invalid_api_key"),
        ("[refuse] something bad", PermanentError, "content policy"),
    ],
)
def test_errors_map_to_the_taxonomy_and_are_asked_once(
    model: tuple[FakeModelServer, LlmClient], prompt: str, error: type[Exception], text: str
) -> None:
    fake, client = model
    with pytest.raises(error, match=text):
        complete(client, prompt)
    assert fake.calls[prompt] == 1


def test_a_hang_ends_at_the_callers_timeout_as_transient(
    model: tuple[FakeModelServer, LlmClient],
) -> None:
    fake, client = model
    started = time.monotonic()
    with pytest.raises(TransientError, match="APITimeoutError"):
        complete(client, "[hang] forever", timeout_s=0.5)
    assert time.monotonic() - started < 3
    assert fake.calls["[hang] forever"] == 1


def test_unreachable_server_is_transient() -> None:
    from tests.support import free_port

    client = LlmClient(api_key="k", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m")
    with pytest.raises(TransientError, match="APIConnectionError"):
        complete(client, "anyone?")


def test_retry_after_forms() -> None:
    assert retry_after_s({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_s({"retry-after": "3"}) == 3
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 55 < retry_after_s({"retry-after": http_date}) <= 60
    assert retry_after_s({}) == 10


def test_openai_s_rate_limit_headers_are_read_as_the_provider_sends_them() -> None:
    headers = {
        "x-ratelimit-limit-requests": "3000",
        "x-ratelimit-remaining-requests": "2999",
        "x-ratelimit-reset-requests": "20ms",
        "x-ratelimit-limit-tokens": "250000",
        "x-ratelimit-remaining-tokens": "249000",
        "x-ratelimit-reset-tokens": "240ms",
    }
    seen = observe(headers, at=5.0)
    assert seen == Observation(
        at=5.0,
        limit_requests=3000,
        remaining_requests=2999,
        limit_tokens=250_000,
        remaining_tokens=249_000,
    )
    assert observe({"x-ratelimit-remaining-requests": "nan"}, at=5.0) is None
    assert observe({}, at=5.0) is None
