"""Completion callbacks: the job's summary POSTed to its `callback_url`, signed, retried.

- The body is the status JSON, serialised once; the signature is HMAC-SHA256 over
  `<timestamp>.<body>` with CALLBACK_SECRET, sent as `X-Signature: t=<timestamp>,v1=<hex>`
  (`verify` is what a receiver runs). `X-Callback-Id` is the same for every delivery of one
  job's callback: receivers deduplicate on it (delivery is at least once).
- Private, loopback, link-local and other non-public targets are refused unless
  ALLOW_PRIVATE_CALLBACKS is set, when the job is submitted and again just before each
  delivery (the name may resolve elsewhere by then). Redirects are not followed.
- A delivery maps its result to the core's taxonomy: 2xx done; 429 -> RateLimitedError;
  5xx, timeouts, connection errors -> TransientError; any other answer -> PermanentError.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from chunking.errors import PermanentError, RateLimitedError, TransientError
from chunking.llm import retry_after_s
from chunking.settings import get_settings
from chunking.store import JobStore

SIGNATURE_HEADER = "X-Signature"
TOLERANCE_S = 300  # how old a signed timestamp a receiver accepts
REPLY_MAX = 4096  # bytes of a receiver's answer read (for the error message)


class CallbackTargetError(ValueError):
    """The callback URL is not one we may call."""


class CallbackUnresolvedError(CallbackTargetError):
    """The host does not resolve (now): refused at submission, retried at delivery."""


def check_target(url: str, allow_private: bool) -> None:
    """Raise CallbackTargetError unless `url` is http(s) to a host that resolves to public IPs."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises for one out of range
    except ValueError as err:
        raise CallbackTargetError(f"{url!r} is not a valid URL ({err})") from err
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackTargetError(f"{url!r} is not an http(s) URL with a host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise CallbackUnresolvedError(f"{host!r} does not resolve ({err})") from err
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise CallbackTargetError(
                f"{parts.hostname!r} resolves to {address}, a private, loopback or link-local "
                "address: refused (set ALLOW_PRIVATE_CALLBACKS=1 to allow it)"
            )


def signature(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(body: bytes, header: str, secret: str, now: float | None = None) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > TOLERANCE_S:
        return False
    expected = signature(body, secret, timestamp)
    return hmac.compare_digest(expected, header)


async def deliver(
    url: str,
    summary: dict[str, Any],
    *,
    secret: str,
    allow_private: bool,
    timeout_s: float,
) -> int:
    """POST the signed summary once; returns the HTTP status of a 2xx answer."""
    try:
        # A DNS lookup blocks: off the event loop, which the local path's chunks share.
        await asyncio.to_thread(check_target, url, allow_private)
    except CallbackUnresolvedError as err:  # a DNS hiccup is worth another try
        raise TransientError(f"callback_url: {err}") from err
    except CallbackTargetError as err:
        raise PermanentError(f"callback_url refused: {err}") from err
    body = json.dumps(summary, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: signature(body, secret, int(time.time())),
        "X-Callback-Id": f"{summary['job_id']}-completed",
    }
    try:
        # One deadline for the whole exchange, and at most REPLY_MAX bytes of the answer read:
        # a receiver cannot hold a delivery open, or feed it, for ever.
        async with (
            asyncio.timeout(timeout_s),
            httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as http,
            http.stream("POST", url, content=body, headers=headers) as response,
        ):
            reply = b""
            async for part in response.aiter_bytes():
                reply += part
                if len(reply) >= REPLY_MAX:
                    break
    except (httpx.HTTPError, TimeoutError) as err:
        raise TransientError(f"callback to {url}: {type(err).__name__}: {err}") from err
    text = reply[:200].decode("utf-8", "replace")
    what = f"callback to {url} answered {response.status_code}: {text}"
    if response.status_code == 429:
        raise RateLimitedError(what, retry_after_s(response.headers))
    if response.status_code >= 500:
        raise TransientError(what)
    if not 200 <= response.status_code < 300:
        raise PermanentError(what)
    return response.status_code


async def send_job_callback(store: JobStore, job_id: str) -> str:
    """Deliver a finished job's callback, if it asked for one; returns what happened."""
    job = await asyncio.to_thread(store.get_job, job_id)
    if job is None:
        raise PermanentError(f"job_id {job_id!r}: no such job in the job store")
    if job.spec.callback_url is None:
        return "no callback_url"
    summary = await asyncio.to_thread(store.status, job_id)
    assert summary is not None
    settings = get_settings()
    if not settings.callback_secret:
        raise PermanentError("CALLBACK_SECRET is not set: callbacks are always signed")
    code = await deliver(
        job.spec.callback_url, summary.model_dump(mode="json"),
        secret=settings.callback_secret, allow_private=settings.allow_private_callbacks,
        timeout_s=settings.callback_timeout_s,
    )  # fmt: skip
    return f"delivered ({code})"
