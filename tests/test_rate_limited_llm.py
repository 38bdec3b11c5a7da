"""tests/rate_limited_llm.py through the real openai SDK: answers, OpenAI's rate-limit headers
and 429s, continuous refill, the token bucket, storms, and the records benchmarks read.

Behaviour only: no bound here is tight enough to depend on the machine's speed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.rate_limited_llm import RateLimitedModelServer, go_duration
from tests.support import ServerThread, free_port, wait_for

DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")  # OpenAI's: 20ms, 1.5s, 6m0s
LIMIT_HEADERS = [
    f"x-ratelimit-{part}-{dimension}"
    for dimension in ("requests", "tokens")
    for part in ("limit", "remaining", "reset")
]

Started = tuple[RateLimitedModelServer, openai.OpenAI, str]


@pytest.fixture
def start() -> Iterator[Callable[..., Started]]:
    """start(**options): a server on a free port, and an SDK client that never retries."""
    threads: list[ServerThread] = []

    def starting(**options: Any) -> Started:
        options = {"latency_s": 0.0, "jitter_s": 0.0, **options}
        server = RateLimitedModelServer(**options)
        thread = ServerThread(server.app).start()
        threads.append(thread)
        client = openai.OpenAI(base_url=f"{thread.url}/v1", api_key="x", max_retries=0)
        return server, client, thread.url

    yield starting
    for thread in threads:
        thread.stop()


def ask(client: openai.OpenAI, prompt: str = "hello there", **kwargs: Any) -> ChatCompletion:
    answer: ChatCompletion = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": prompt}], **kwargs
    )
    return answer


def ask_raw(client: openai.OpenAI, prompt: str = "hello there") -> Mapping[str, str]:
    """The headers of a 200 answer."""
    raw = client.chat.completions.with_raw_response.create(
        model="test-model", messages=[{"role": "user", "content": prompt}]
    )
    return raw.headers


def refused(client: openai.OpenAI, prompt: str = "hello there") -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as info:
        ask(client, prompt)
    return info.value


def test_go_duration_writes_what_openai_writes() -> None:
    assert [go_duration(s) for s in (0, 0.02, 0.0201, 1, 1.5, 59.22, 360, 3723.25)] == [
        "0s",
        "20ms",
        "21ms",
        "1s",
        "1.5s",
        "59.22s",
        "6m0s",
        "1h2m3.25s",
    ]


def test_an_answer_parses_as_a_chat_completion_with_usage(start: Callable[..., Started]) -> None:
    _, client, _ = start(rpm=600)
    answer = ask(client, "Classify this review please: great battery life")
    assert isinstance(answer, ChatCompletion) and answer.object == "chat.completion"
    assert answer.choices[0].message.content == "answer: Classify this review please: great"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    # 48 characters: 12 prompt tokens; the fixed 20 completion tokens, or max_tokens if fewer.
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (12, 20)
    assert answer.usage.total_tokens == 32
    assert ask(client, "x" * 9, max_tokens=5).usage.completion_tokens == 5  # type: ignore[union-attr]


def test_every_answer_carries_openais_rate_limit_headers(start: Callable[..., Started]) -> None:
    _, client, _ = start(rpm=600, tpm=60_000)
    headers = ask_raw(client, "x" * 400)  # 100 + 20 tokens
    assert all(name in headers for name in LIMIT_HEADERS), headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-limit-tokens"]) == (
        "600",
        "60000",
    )
    # Buckets of one second's worth (10 requests, 1,000 tokens), charged at admission.
    assert int(headers["x-ratelimit-remaining-requests"]) == 9
    assert 880 <= int(headers["x-ratelimit-remaining-tokens"]) <= 881
    assert DURATION.match(headers["x-ratelimit-reset-requests"])
    assert DURATION.match(headers["x-ratelimit-reset-tokens"])
    assert headers["x-ratelimit-reset-requests"].endswith("ms")  # 1 request at 10/s: < 1 s


def test_only_a_limited_dimension_has_headers_and_no_headers_sends_none(
    start: Callable[..., Started],
) -> None:
    _, client, _ = start(rpm=600)
    headers = ask_raw(client)
    assert "x-ratelimit-limit-requests" in headers and "x-ratelimit-limit-tokens" not in headers

    _, quiet, _ = start(rpm=60, headers=False)
    assert not [name for name in ask_raw(quiet) if name.startswith("x-ratelimit")]
    err = refused(quiet)  # the 429 still says when to come back
    assert not [name for name in err.response.headers if name.startswith("x-ratelimit")]
    assert "retry-after" in err.response.headers and "retry-after-ms" in err.response.headers


def test_past_the_burst_a_call_is_refused_as_openai_refuses_it(
    start: Callable[..., Started],
) -> None:
    server, client, _ = start(rpm=600)  # 10 a second, a bucket of 10
    admitted = 0
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(50):
            ask(client)
            admitted += 1
    assert admitted >= 10  # the bucket starts full
    err = info.value
    assert err.status_code == 429
    body = err.body
    assert isinstance(body, dict)
    message = body["message"]
    assert body == {
        "message": message,
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert err.code == "rate_limit_exceeded" and err.type == "requests"
    assert re.fullmatch(
        r"Rate limit reached for test-model in organization org-test on requests per min "
        r"\(RPM\): Limit 600, Used \d+, Requested 1\. Please try again in \d+ms\. Visit "
        r"https://platform\.openai\.com/account/rate-limits to learn more\.",
        message,
    ), message
    headers = err.response.headers
    wait_ms = int(headers["retry-after-ms"])
    assert 0 < wait_ms <= 100  # one request's worth at 10 a second
    assert headers["retry-after"] == "1"  # whole seconds, rounded up
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert server.rate_limited == 1


def test_after_waiting_retry_after_ms_the_call_succeeds(start: Callable[..., Started]) -> None:
    _, client, _ = start(rpm=60)  # one a second, a bucket of one: the refill is continuous
    ask(client)
    wait_ms = int(refused(client).response.headers["retry-after-ms"])
    assert 500 < wait_ms <= 1000  # not the rest of a minute
    time.sleep(wait_ms / 1000)
    assert ask(client).usage is not None


def test_the_token_bucket_refuses_a_big_prompt_with_type_tokens(
    start: Callable[..., Started],
) -> None:
    # 600 TPM over a minute's bucket: 600 tokens, 10 a second back.
    _, client, _ = start(tpm=600, burst_s=60)
    big = "y" * 2_000  # 500 prompt + 20 completion tokens
    ask(client, big)
    err = refused(client, big)
    assert err.type == "tokens" and err.code == "rate_limit_exceeded"
    assert "tokens per min (TPM): Limit 600, Used 520, Requested 520." in str(err.body)
    # Room for 520 with 80 left at 10 a second: about 44 s.
    assert 40_000 < int(err.response.headers["retry-after-ms"]) <= 44_000
    assert int(err.response.headers["retry-after"]) in range(40, 45)
    assert ask(client, "short").usage is not None  # a small one still fits
    assert "x-ratelimit-limit-requests" not in err.response.headers

    too_big = refused(client, "z" * 2_400)  # 620 tokens: more than the limit, never admitted
    assert too_big.type == "tokens" and "Request too large" in str(too_big.body)
    assert "retry-after" not in too_big.response.headers


def test_a_storm_refuses_everything_until_it_ends(start: Callable[..., Started]) -> None:
    server, client, url = start(rpm=6_000)
    server.refuse_for(30)
    err = refused(client)
    assert err.type == "requests"
    assert 29 <= int(err.response.headers["retry-after"]) <= 30  # the storm's time left
    assert 29_000 < int(err.response.headers["retry-after-ms"]) <= 30_000

    assert httpx.post(f"{url}/admin/storm", json={"seconds": 0.2}).status_code == 200
    err = refused(client)
    assert err.response.headers["retry-after-ms"] == "1000"  # at least 1 s
    time.sleep(1)
    assert ask(client).usage is not None


def test_always_429_never_lifts(start: Callable[..., Started]) -> None:
    server, client, _ = start(always_429=True)
    for _ in range(3):
        assert refused(client).response.headers["retry-after"] == "1"
    assert server.rate_limited == 3 and not server.admitted_at


def test_stats_count_calls_429s_and_overlapping_requests_and_reset_clears(
    start: Callable[..., Started],
) -> None:
    server, client, url = start(rpm=600, latency_s=0.3, jitter_s=0.05)
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda i: ask(client, f"item {i}"), range(5)))
    ask(client, "item 0")  # asked twice

    def maybe(i: int) -> bool:
        try:
            ask(client, f"more {i}")
        except openai.RateLimitError:
            return False
        return True

    with ThreadPoolExecutor(20) as pool:  # twice the bucket at once: some are refused
        answered = list(pool.map(maybe, range(20)))

    stats = httpx.get(f"{url}/stats", params={"intervals": "true"}).json()
    assert stats["admitted"] + stats["rate_limited"] == stats["requests"]
    assert stats["rate_limited"] == answered.count(False) > 0
    assert stats["peak_in_flight"] >= 5
    assert stats["prompts_answered_twice"] == 1 and server.calls["item 0"] == 2
    assert stats["tokens_admitted"] == stats["admitted"] * (2 + 20)
    assert sum(stats["timeline"]["admitted_per_s"]) == stats["admitted"]
    assert sum(stats["timeline"]["rate_limited_per_s"]) == stats["rate_limited"]
    assert stats["limits"] == {"rpm": 600, "tpm": 0, "burst_s": 1.0}
    # The five asked at once were answered at once: their spans overlap, each at least 0.25 s.
    first_five = sorted(stats["intervals"])[:5]
    assert max(s for s, _ in first_five) < min(e for _, e in first_five)
    assert all(e - s > 0.2 for s, e in first_five)

    assert httpx.post(f"{url}/admin/reset").status_code == 200
    stats = httpx.get(f"{url}/stats").json()
    assert (stats["requests"], stats["rate_limited"], stats["peak_in_flight"]) == (0, 0, 0)
    assert stats["timeline"] == {"admitted_per_s": [], "rate_limited_per_s": []}
    assert ask(client).usage is not None  # and the buckets are full again


def test_runs_as_a_module_with_the_benchmarks_options() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.rate_limited_llm",
            "--port",
            str(port),
            "--rpm",
            "120",
            "--tpm",
            "0",
            "--latency-s",
            "0",
            "--jitter-s",
            "0",
            "--no-headers",
        ],
    )
    try:

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/stats").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=20)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.status_code == 200 and "x-ratelimit-limit-requests" not in raw.headers
        stats = httpx.get(f"http://127.0.0.1:{port}/stats").json()
        assert stats["limits"]["rpm"] == 120 and stats["admitted"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
