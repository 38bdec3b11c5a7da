"""An OpenAI-compatible chat completions server that rate-limits as the provider does, for the
throughput tests and benchmarks (tests/llm_server.py is the one for faults).

`POST /v1/chat/completions` answers after `latency ± jitter` seconds (uniform, seeded) with a
`chat.completion`: content `"answer: <first words>"`, prompt tokens = ceil(characters / 4),
completion tokens = `completion_tokens` (or `max_tokens` when smaller).

Limits are two token buckets with continuous refill, one of requests and one of tokens: each
refills at limit / 60 per second up to limit x `burst_s` / 60 (OpenAI enforces a per-minute
limit over short windows: 60,000 RPM as 1,000 per second) and starts full. A request is admitted
only if both have room for it (1 request; prompt + completion tokens, charged at admission);
otherwise it gets OpenAI's 429: `retry-after` (whole seconds) and `retry-after-ms` (the time
until the buckets have room) and OpenAI's error body. One larger than a whole bucket is admitted
when the bucket is full, leaving it in debt (OpenAI admits a 20,000-token request under a
30,000 TPM limit); one over the per-minute limit itself is refused for good ("Request too
large", no retry-after). Every answer carries OpenAI's `x-ratelimit-{limit,remaining,reset}-
{requests,tokens}` headers for each limited dimension, unless `headers=False` (`--no-headers`,
as vLLM or Ollama send none).

For tests: `refuse_for(seconds)` (or `POST /admin/storm {"seconds": 5}`) refuses every request
for that long; `always_429` refuses every request, for ever. It records what it saw (calls per
prompt, admissions, 429s, tokens, requests in flight): `GET /stats`, `POST /admin/reset`.

    python -m tests.rate_limited_llm --port 8002 --rpm 3000 --tpm 0 --latency-s 0.5 --jitter-s 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ORGANIZATION = "org-test"
LIMITS_URL = "https://platform.openai.com/account/rate-limits"
Dimension = Literal["requests", "tokens"]
UNIT = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes x-ratelimit-reset-* and "try again in" (Go's
    time.Duration format, to the millisecond, rounded up): 20ms, 1s, 1.5s, 6m0s, 1h2m3s."""
    ms = math.ceil(seconds * 1000 - 1e-6)  # up: waiting that long is always enough
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


class TokenBucket:
    """`limit` per minute, refilled continuously at limit / 60 per second up to limit x burst_s
    / 60 (at least 1); starts full. Its level may go below 0: a request bigger than the whole
    bucket is let in when it is full, and later ones wait for the debt to be paid."""

    def __init__(self, limit: int, burst_s: float, now: float) -> None:
        self.limit = limit
        self.rate = limit / 60
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.at = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_s(self, cost: float) -> float:
        """How long until there is room for `cost` (0: now); refill first."""
        return max(0.0, (min(cost, self.capacity) - self.level) / self.rate)

    def take(self, cost: float) -> None:
        self.level -= cost

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.level))

    @property
    def used(self) -> int:
        """Of the per-minute limit, as OpenAI's message says "Used": the empty part of the bucket
        in per-minute units."""
        return min(self.limit, round(self.limit * (1 - max(0.0, self.level) / self.capacity)))

    def reset_s(self) -> float:
        return (self.capacity - self.level) / self.rate


@dataclass(frozen=True)
class Refusal:
    """Why a request gets a 429: the bucket that refused (or a storm) and when to come back;
    `retry_s` None for a request that can never be admitted."""

    dimension: Dimension
    message: str
    retry_s: float | None


def _prompt_of(body: dict[str, Any]) -> tuple[str, int]:
    """The last message's text (what calls are counted by), and the characters of all."""
    texts = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text counts
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        texts.append(content if isinstance(content, str) else "")
    return (texts[-1] if texts else ""), sum(len(t) for t in texts)


class RateLimitedModelServer:
    """The server (see the module docstring); 0 as a limit means no limit in that dimension."""

    def __init__(
        self,
        rpm: int = 0,
        tpm: int = 0,
        *,
        latency_s: float = 0.5,
        jitter_s: float = 0.1,
        burst_s: float = 1.0,
        completion_tokens: int = 20,
        headers: bool = True,
        always_429: bool = False,
        seed: int = 0,
    ) -> None:
        self.rpm, self.tpm, self.burst_s = rpm, tpm, burst_s
        self.latency_s, self.jitter_s = latency_s, jitter_s
        self.completion_tokens = completion_tokens
        self.headers, self.always_429 = headers, always_429
        self.rng = random.Random(seed)
        # uvicorn runs one event loop, but tests read the records from their own thread.
        self.lock = threading.Lock()
        self.reset()
        self.app = FastAPI(title="rate-limited OpenAI-compatible test server")
        self._routes()

    def reset(self) -> None:
        """Full buckets, no storm, and no records."""
        with self.lock:
            now = time.monotonic()
            self.buckets: dict[Dimension, TokenBucket] = {}
            if self.rpm:
                self.buckets["requests"] = TokenBucket(self.rpm, self.burst_s, now)
            if self.tpm:
                self.buckets["tokens"] = TokenBucket(self.tpm, self.burst_s, now)
            self.storm_until = 0.0
            self.calls: Counter[str] = Counter()  # every request, per prompt
            self.answered: Counter[str] = Counter()  # admitted ones, per prompt
            self.admitted_at: list[float] = []  # epoch seconds
            self.refused_at: list[float] = []
            self.rate_limited = 0
            self.tokens_admitted = 0
            self.in_flight = 0
            self.peak_in_flight = 0
            self.intervals: list[tuple[float, float]] = []  # each answered request's epoch span

    def refuse_for(self, seconds: float) -> None:
        """Refuse every request with a 429 for `seconds` from now (a provider's bad minute)."""
        with self.lock:
            self.storm_until = time.monotonic() + seconds

    # -- admission -------------------------------------------------------------------------

    def _cost(self, body: dict[str, Any], chars: int) -> tuple[int, int]:
        prompt_tokens = math.ceil(chars / 4)
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        completion = min(self.completion_tokens, asked) if asked else self.completion_tokens
        return prompt_tokens, completion

    def _refusal(self, model: str, tokens: int, now: float) -> Refusal | None:
        """Why this request may not run now, or None (then it has been charged). Under the lock."""
        if self.always_429 or now < self.storm_until:
            # A storm says when it ends (at least 1 s away); one that never lifts says 1 s.
            left = 1.0 if self.always_429 else max(1.0, self.storm_until - now)
            return Refusal("requests", self._limit_message(model, "requests", 1, left), left)
        for bucket in self.buckets.values():
            bucket.refill(now)
        tokens_bucket = self.buckets.get("tokens")
        if tokens_bucket and tokens > tokens_bucket.limit:
            message = (
                f"Request too large for {model} in organization {ORGANIZATION} on "
                f"{UNIT['tokens']}: Limit {tokens_bucket.limit}, Requested {tokens}. The input "
                f"or output tokens must be reduced in order to run successfully. Visit "
                f"{LIMITS_URL} to learn more."
            )
            return Refusal("tokens", message, None)
        costs: dict[Dimension, int] = {"requests": 1, "tokens": tokens}
        waits = {name: bucket.wait_s(costs[name]) for name, bucket in self.buckets.items()}
        if waits and max(waits.values()) > 0:
            dimension = max(waits, key=lambda name: waits[name])
            wait = waits[dimension]
            message = self._limit_message(model, dimension, costs[dimension], wait)
            return Refusal(dimension, message, wait)
        for name, bucket in self.buckets.items():
            bucket.take(costs[name])
        return None

    def _limit_message(self, model: str, dimension: Dimension, requested: int, wait: float) -> str:
        bucket = self.buckets.get(dimension)
        limit = bucket.limit if bucket else 0
        used = bucket.used if bucket else 0
        return (
            f"Rate limit reached for {model} in organization {ORGANIZATION} on {UNIT[dimension]}: "
            f"Limit {limit}, Used {used}, Requested {requested}. Please try again in "
            f"{go_duration(wait)}. Visit {LIMITS_URL} to learn more."
        )

    def _limit_headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for each limited dimension, as the buckets are now."""
        if not self.headers:
            return {}
        headers = {}
        for name, bucket in self.buckets.items():
            headers[f"x-ratelimit-limit-{name}"] = str(bucket.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining)
            headers[f"x-ratelimit-reset-{name}"] = go_duration(bucket.reset_s())
        return headers

    # -- routes ----------------------------------------------------------------------------

    def _routes(self) -> None:
        @self.app.post("/v1/chat/completions")
        async def completions(request: Request) -> JSONResponse:
            body = await request.json()
            model = str(body.get("model", ""))
            prompt, chars = _prompt_of(body)
            prompt_tokens, completion_tokens = self._cost(body, chars)
            with self.lock:
                self.calls[prompt] += 1
                now = time.monotonic()
                refusal = self._refusal(model, prompt_tokens + completion_tokens, now)
                headers = self._limit_headers()
                if refusal is None:
                    self.answered[prompt] += 1
                    self.admitted_at.append(time.time())
                    self.tokens_admitted += prompt_tokens + completion_tokens
                    self.in_flight += 1
                    self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                    latency = self.latency_s + self.rng.uniform(-self.jitter_s, self.jitter_s)
                else:
                    self.rate_limited += 1
                    self.refused_at.append(time.time())
            if refusal is not None:
                return self._too_many(refusal, headers)
            started = time.time()
            try:
                await asyncio.sleep(max(0.0, latency))
            finally:
                with self.lock:
                    self.in_flight -= 1
                    self.intervals.append((started, time.time()))
            words = " ".join(prompt.split()[:5])
            completion = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(started),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": f"answer: {words}",
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": None,
            }
            return JSONResponse(completion, headers=headers)

        @self.app.get("/stats")
        async def stats(intervals: bool = False) -> dict[str, Any]:
            return self.stats(intervals=intervals)

        @self.app.post("/admin/reset")
        async def reset() -> dict[str, bool]:
            self.reset()
            return {"ok": True}

        @self.app.post("/admin/storm")
        async def storm(request: Request) -> dict[str, float]:
            seconds = float((await request.json())["seconds"])
            self.refuse_for(seconds)
            return {"seconds": seconds}

    def _too_many(self, refusal: Refusal, headers: dict[str, str]) -> JSONResponse:
        if refusal.retry_s is not None:
            headers = {
                **headers,
                "retry-after": str(max(1, math.ceil(refusal.retry_s))),
                "retry-after-ms": str(math.ceil(refusal.retry_s * 1000)),
            }
        error = {
            "message": refusal.message,
            "type": refusal.dimension,
            "param": None,
            "code": "rate_limit_exceeded",
        }
        return JSONResponse({"error": error}, status_code=429, headers=headers)

    # -- records ---------------------------------------------------------------------------

    def stats(self, *, intervals: bool = False) -> dict[str, Any]:
        """What the server saw, as `GET /stats` answers it; times relative to the first
        admission (epoch `first_admitted_at`), per-second counts in `timeline`."""
        with self.lock:
            admitted, refused = list(self.admitted_at), list(self.refused_at)
            spans = list(self.intervals)
            result: dict[str, Any] = {
                "limits": {"rpm": self.rpm, "tpm": self.tpm, "burst_s": self.burst_s},
                "requests": sum(self.calls.values()),
                "admitted": len(admitted),
                "rate_limited": self.rate_limited,
                "tokens_admitted": self.tokens_admitted,
                "peak_in_flight": self.peak_in_flight,
                "in_flight": self.in_flight,
                "prompts": len(self.calls),
                "prompts_answered_twice": sum(1 for n in self.answered.values() if n > 1),
            }
        start = admitted[0] if admitted else (refused[0] if refused else time.time())
        result["first_admitted_at"] = admitted[0] if admitted else None
        result["last_answered_at"] = max((end for _, end in spans), default=None)
        result["timeline"] = {
            "admitted_per_s": per_second(admitted, start),
            "rate_limited_per_s": per_second(refused, start),
        }
        if intervals:
            result["intervals"] = [[s - start, e - start] for s, e in spans]
        return result


def per_second(stamps: list[float], start: float) -> list[int]:
    """How many of `stamps` fall in each second from `start` (earlier ones in the first)."""
    counts: list[int] = []
    for stamp in stamps:
        second = max(0, int(stamp - start))
        counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--rpm", type=int, default=3000, help="requests per minute (0: none)")
    parser.add_argument("--tpm", type=int, default=0, help="tokens per minute (0: none)")
    parser.add_argument("--latency-s", type=float, default=0.5)
    parser.add_argument("--jitter-s", type=float, default=0.1)
    parser.add_argument("--burst-s", type=float, default=1.0, help="bucket size in seconds")
    parser.add_argument("--completion-tokens", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-headers", action="store_true", help="send no x-ratelimit-*")
    parser.add_argument("--always-429", action="store_true", help="refuse every request")
    args = parser.parse_args()
    import uvicorn

    server = RateLimitedModelServer(
        args.rpm,
        args.tpm,
        latency_s=args.latency_s,
        jitter_s=args.jitter_s,
        burst_s=args.burst_s,
        completion_tokens=args.completion_tokens,
        headers=not args.no_headers,
        always_429=args.always_429,
        seed=args.seed,
    )
    uvicorn.run(server.app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
