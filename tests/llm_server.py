"""A local OpenAI-compatible chat completions server for tests (no model can be downloaded here).

It answers `POST /v1/chat/completions` as the OpenAI API does — same JSON for answers and for
errors — and misbehaves on request: a prompt containing `[429]`, `[500]`, `[400-context]`,
`[401]`, `[refuse]` or `[hang]` gets that response; `[slow]` adds `slow_s` of latency;
`[429x2]` / `[500x1]` / `[400-contextx1]` fail only the first 2 / 1 / 1 calls with that
prompt, then answer.
A request with a `json_schema` response format is answered JSON matching its (simple) schema,
but `{}` for `[badjson]`, and for `[badjsonx1]` the first time (realtime or in a batch) only.
`storm(seconds)` answers every call with a 429 until then (Retry-After: what is left of it).
It counts the calls it received per prompt, and keeps when each was answered (`spans`), so
tests can prove what was (not) retried and what overlapped.
The same base URL also serves OpenAI's Files and Batch API (`tests/batch_api.py`, `self.batch`):
a request sent in a batch gets the body this endpoint answers for it (`answer`).

Also runnable, to try the README's example without a real model:
    python -m tests.llm_server --port 8001    # then OPENAI_BASE_URL=http://127.0.0.1:8001/v1
    python -m tests.llm_server --batch-turnaround 60    # batches take a minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import time
import uuid
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.batch_api import FakeBatchApi

FLAKY = re.compile(r"\[(?P<status>429|500|400-context)x(?P<times>\d+)\]")
BAD_JSON = re.compile(r"\[badjson(?:x(?P<times>\d+))?\]")


def _error_body(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _error(status: int, message: str, kind: str, code: str | None, **headers: str) -> JSONResponse:
    return JSONResponse(_error_body(message, kind, code), status_code=status, headers=headers)


def matching(schema: dict[str, Any], prompt: str) -> Any:
    """A value of a simple JSON schema (the first of an enum, every property of an object, a
    string echoing the prompt): what a model honouring a json_schema response format answers."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: matching(sub, prompt) for name, sub in properties.items()}
    if kind == "array":
        return [matching(schema.get("items", {}), prompt)] * schema.get("minItems", 0)
    values = {"integer": len(prompt.split()), "number": 0.5, "boolean": True, "null": None}
    return values.get(kind, f"echo: {prompt}")


def content_of(body: dict[str, Any], prompt: str, asked: int) -> str:
    """The answer's text: an echo, or JSON matching the request's json_schema response format
    (`{}` instead for `[badjson]`, and for the first n asks of `[badjsonxN]`)."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return f"echo: {prompt}"
    if (bad := BAD_JSON.search(prompt)) and (bad["times"] is None or asked <= int(bad["times"])):
        return "{}"
    return json.dumps(matching(response_format["json_schema"].get("schema", {}), prompt))


def answer(body: dict[str, Any], asked: int = 1) -> tuple[int, dict[str, Any]]:
    """What the model answers a request, whichever way it came (realtime or in a batch), the
    `asked`-th time its prompt is asked: the markers about the request itself. Those about the
    transport (429, 500, hang...) are the realtime endpoint's own."""
    prompt = body["messages"][-1]["content"]
    if "[400-context]" in prompt:
        return 400, _error_body("This model's maximum context length is 8192 tokens.",
                                "invalid_request_error", "context_length_exceeded")  # fmt: skip
    if "[401]" in prompt:
        return 401, _error_body("Incorrect API key provided", "invalid_request_error",
                                "invalid_api_key")  # fmt: skip
    refused = "[refuse]" in prompt
    content = None if refused else content_of(body, prompt, asked)
    words = len(prompt.split())
    return 200, {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "content_filter" if refused else "stop",
        }],
        "usage": {"prompt_tokens": words, "completion_tokens": words + 1,
                  "total_tokens": 2 * words + 1},
    }  # fmt: skip


class FakeModelServer:
    def __init__(
        self,
        retry_after: str = "7",
        slow_s: float = 0.2,
        hang_s: float = 30,
        batch_turnaround_s: float = 1.0,
    ) -> None:
        self.calls: Counter[str] = Counter()
        self.retry_after, self.slow_s, self.hang_s = retry_after, slow_s, hang_s
        self.storm_until = 0.0
        self.spans: list[tuple[str, float, float]] = []  # (prompt, start, end), monotonic
        self.app = FastAPI()
        self.batch = FakeBatchApi(self.app, answer=answer, turnaround_s=batch_turnaround_s)

        @self.app.get("/_calls")
        async def calls() -> dict[str, int]:
            """The calls received per prompt: what a live run shows of what was (not) asked."""
            return dict(self.calls)

        @self.app.post("/v1/chat/completions")
        async def completions(request: Request) -> Any:
            body = await request.json()
            prompt, started = body["messages"][-1]["content"], time.monotonic()
            try:
                return await realtime(body, prompt)
            finally:
                self.spans.append((prompt, started, time.monotonic()))

        async def realtime(body: dict[str, Any], prompt: str) -> Any:
            self.calls[prompt] += 1
            if (storm_left := self.storm_until - time.monotonic()) > 0:
                wait = {"retry-after": str(math.ceil(storm_left))}
                return _error(429, "Rate limit reached for requests", "requests",
                              "rate_limit_exceeded", **wait)  # fmt: skip
            if (flaky := FLAKY.search(prompt)) and self.calls[prompt] <= int(flaky["times"]):
                prompt = f"[{flaky['status']}]"  # fail this call as the marker says
                body = {**body, "messages": [{"role": "user", "content": prompt}]}
            if "[429]" in prompt:
                headers = {"retry-after": self.retry_after}
                return _error(429, "Rate limit reached for requests", "requests",
                              "rate_limit_exceeded", **headers)  # fmt: skip
            if "[500]" in prompt:
                return _error(500, "The server had an error", "server_error", None)
            status, answered = answer(body, self.calls[prompt])
            if status != 200:
                return JSONResponse(answered, status_code=status)
            if "[hang]" in prompt:
                await asyncio.sleep(self.hang_s)
            if "[slow]" in prompt:
                await asyncio.sleep(self.slow_s)
            return answered

    def peak(self, prompts: set[str]) -> int:
        """The most of these prompts that were being answered at once."""
        edges = sorted(
            (at, step)
            for prompt, start, end in self.spans
            if prompt in prompts
            for at, step in ((start, 1), (end, -1))
        )
        most = now = 0
        for _, step in edges:
            now += step
            most = max(most, now)
        return most

    def storm(self, seconds: float) -> None:
        self.storm_until = time.monotonic() + seconds


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test server (no model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--retry-after", default="2", help="Retry-After of its 429 answers")
    parser.add_argument("--batch-turnaround", type=float, default=1.0,
                        help="seconds a batch spends in_progress")  # fmt: skip
    args = parser.parse_args()
    import uvicorn

    fake = FakeModelServer(retry_after=args.retry_after, batch_turnaround_s=args.batch_turnaround)
    uvicorn.run(fake.app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
