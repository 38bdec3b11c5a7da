"""Calls to an OpenAI-compatible model, with the SDK's errors mapped to the core's taxonomy.

Every call has an explicit timeout (the caller passes what its run has left) and the SDK's own
silent retries are off: every retry is ours, counted, and visible in the job's status.
- 429 -> ModelRateLimited with the server's Retry-After (the caller waits it out: a 429 is
  never a failure);
- timeouts, connection errors, 5xx -> TransientError;
- 400 (context length, invalid request), 422, content-policy refusals -> PermanentError for
  that item: never retried;
- 401, 403, 404 (bad key, no access, no such model) -> ModelEndpointError: never retried, and
  no other item can succeed either, so the whole chunk fails at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletion

from chunking import secrets
from chunking.budget import Observation
from chunking.errors import PermanentError, RateLimitedError, TransientError, retry_after_s
from chunking.settings import get_settings
from workloads.llm.ratelimit import observe
from workloads.llm.structured import ResponseFormat

ENDPOINT_STATUSES = (401, 403, 404)


class ModelEndpointError(PermanentError):
    """The endpoint refuses every request (key, access, model name): not one item's fault."""


class ModelRateLimited(RateLimitedError):
    """A 429, with what its x-ratelimit-* headers said."""

    def __init__(
        self, message: str, retry_after_s: float, seen: Observation | None, sent_at: float
    ) -> None:
        super().__init__(message, retry_after_s)
        self.seen, self.sent_at = seen, sent_at


@dataclass(frozen=True)
class Completion:
    output: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float | None
    seen: Observation | None = None  # the answer's x-ratelimit-* headers


def _describe(err: openai.APIStatusError) -> str:
    body = err.body if isinstance(err.body, dict) else {}
    code = body.get("code") or body.get("type") or ""
    message = body.get("message") or str(err)
    return f"{err.status_code}{' ' + code if code else ''}: {message}"


def missing_model_endpoint() -> str | None:
    """Why no model can be called with these settings, or None when one can.

    Tells from configuration alone, reading no secret: the starter, which checks jobs before
    recording them, is not allowed to read the key.
    """
    if secrets.model_key_configured() or get_settings().openai_base_url:
        return None
    return (
        "OPENAI_API_KEY is not set (nor OPENAI_API_KEY_PARAMETER; or set OPENAI_BASE_URL to an "
        "OpenAI-compatible server)"
    )


class LlmClient:
    @classmethod
    def from_settings(
        cls,
        model: str | None,
        max_tokens: int | None,
        response_format: ResponseFormat | None = None,
    ) -> LlmClient:
        """The job's model on the configured endpoint; PermanentError when none is configured."""
        settings = get_settings()
        if problem := missing_model_endpoint():
            raise PermanentError(problem)
        return cls(
            # Local servers (Ollama, vLLM) ignore the key, but the SDK insists on one.
            api_key=secrets.openai_api_key() or "unused",
            base_url=settings.openai_base_url or None,
            model=model or settings.openai_model,
            max_tokens=max_tokens,
            response_format=response_format,
        )

    @property
    def budget_name(self) -> str:
        """The shared budget this client's requests take their turn in: its model's, at its
        endpoint (the same model elsewhere has a limit of its own)."""
        host = urlsplit(str(self.client.base_url)).netloc
        return f"{self.model}@{host}"

    async def __aenter__(self) -> LlmClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.close()

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        max_tokens: int | None = None,
        response_format: ResponseFormat | None = None,
    ) -> None:
        self.model, self.max_tokens, self.response_format = model, max_tokens, response_format
        # max_retries=0: the SDK would otherwise retry quietly, and bill twice, on its own.
        self.client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)

    async def complete(self, prompt: str, *, timeout_s: float) -> Completion:
        started, sent_at = time.perf_counter(), time.time()
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                timeout=timeout_s,
                max_tokens=self.max_tokens if self.max_tokens else openai.omit,
                response_format=(
                    self.response_format.request()  # type: ignore[arg-type]
                    if self.response_format
                    else openai.omit
                ),
            )
            response = raw.parse()
        except openai.RateLimitError as err:
            headers = err.response.headers
            wait = retry_after_s(headers)
            seen = observe(headers, sent_at)
            raise ModelRateLimited(_describe(err), wait, seen, sent_at) from err
        except openai.OpenAIError as err:
            raise mapped(err) from err
        latency_ms = (time.perf_counter() - started) * 1000
        return completion_of(response, latency_ms, observe(raw.headers, sent_at))


def mapped(err: openai.OpenAIError) -> Exception:
    """The SDK's error as the core's taxonomy (a 429: RateLimitedError, with its wait)."""
    if isinstance(err, openai.APITimeoutError | openai.APIConnectionError):
        return TransientError(f"{type(err).__name__}: {err}")
    if not isinstance(err, openai.APIStatusError):
        return err
    if err.status_code == 429:
        return RateLimitedError(_describe(err), retry_after_s(err.response.headers))
    if err.status_code >= 500:
        return TransientError(_describe(err))
    if err.status_code in ENDPOINT_STATUSES:
        return ModelEndpointError(_describe(err))
    return PermanentError(_describe(err))


def completion_of(
    response: ChatCompletion, latency_ms: float | None, seen: Observation | None = None
) -> Completion:
    """An answer's output and usage (a batch's answer line too); PermanentError when the
    model refused it, TransientError when it answered nothing."""
    if not response.choices:
        raise TransientError("the model answered with no choices")
    choice = response.choices[0]
    if choice.finish_reason == "content_filter":
        raise PermanentError("refused by the content policy (finish_reason=content_filter)")
    usage = response.usage
    return Completion(
        output=choice.message.content or "",
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        latency_ms=None if latency_ms is None else round(latency_ms, 3),
        seen=seen,
    )
