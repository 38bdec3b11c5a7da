"""Completion callbacks: the job's summary POSTed to its `callback_url`, signed, retried.

- The body is the status JSON, serialised once; the signature is HMAC-SHA256 over
  `<timestamp>.<body>` with CALLBACK_SECRET, sent as `X-Signature: t=<timestamp>,v1=<hex>`
  (`verify` is what a receiver runs; it is False, never an exception, for a malformed header).
  `X-Callback-Id` is the same for every delivery of one job's callback: receivers deduplicate
  on it (delivery is at least once).
- Targets are http(s) URLs whose host's addresses are all public (`is_public_address`: an IPv6
  address that carries an IPv4 one, mapped, compatible, 6to4, NAT64 or Teredo, is judged by
  that too). Others are refused unless ALLOW_PRIVATE_CALLBACKS is set, when the job is
  submitted and again at each delivery (the name may resolve elsewhere by then).
- A delivery resolves the name once, checks every address, and connects only to those checked
  addresses, in order until one connects, keeping the URL's Host header and TLS server name:
  a name that answers differently to a second lookup (DNS rebinding) cannot redirect it. It
  connects directly (environment proxies are not used). Redirects are not followed.
- A delivery maps its result to the core's taxonomy: 2xx done; 429 -> RateLimitedError;
  5xx, timeouts, connection errors, a name that does not resolve -> TransientError; any other
  answer, or a refused target -> PermanentError.
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

from chunking import secrets
from chunking.errors import PermanentError, RateLimitedError, TransientError, retry_after_s
from chunking.settings import get_settings
from chunking.store import JobStore

SIGNATURE_HEADER = "X-Signature"
TOLERANCE_S = 300  # how old a signed timestamp a receiver accepts
REPLY_MAX = 4096  # bytes of a receiver's answer read (for the error message)
TIMESTAMP_DIGITS = 12  # a signed timestamp longer than this is malformed, not merely old

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Prefixes whose last 32 bits are the IPv4 address a packet ends up at.
EMBEDDING_LAST_32_BITS = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated, not gone)
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix
)
# NAT64 for local use (RFC 8215): not global, and its IPv4 may sit anywhere in the address.
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


class CallbackTargetError(ValueError):
    """The callback URL is not one we may call."""


class CallbackUnresolvedError(CallbackTargetError):
    """The host does not resolve (now): refused at submission, retried at delivery."""


def is_public_address(address: IPAddress) -> bool:
    """Globally routable unicast; for IPv6, so is every IPv4 address it carries."""
    if address.is_multicast or not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return True
    if address.is_site_local or address in NAT64_LOCAL:
        return False
    embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if any(address in prefix for prefix in EMBEDDING_LAST_32_BITS):
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(is_public_address(inner) for inner in embedded if inner is not None)


def _host_and_port(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises for one out of range
    except ValueError as err:
        raise CallbackTargetError(f"{url!r} is not a valid URL ({err})") from err
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackTargetError(f"{url!r} is not an http(s) URL with a host")
    return host, port or (443 if parts.scheme == "https" else 80)


def resolve_target(url: str, allow_private: bool) -> list[IPAddress]:
    """The addresses `url`'s host resolves to now, in the resolver's order; raises
    CallbackTargetError unless all are public (or allow_private). Blocking: a DNS lookup."""
    host, port = _host_and_port(url)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]  # a literal: no lookup
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as err:
            raise CallbackUnresolvedError(f"{host!r} does not resolve ({err})") from err
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise CallbackUnresolvedError(f"{host!r} does not resolve (no addresses)")
    for address in addresses:
        if not allow_private and not is_public_address(address):
            raise CallbackTargetError(
                f"{host!r} resolves to {address}, a private, loopback, link-local or otherwise "
                "non-public address: refused (set ALLOW_PRIVATE_CALLBACKS=1 to allow it)"
            )
    return addresses


def check_target(url: str, allow_private: bool) -> None:
    """Raise CallbackTargetError unless `url` is http(s) to a host that resolves to public IPs."""
    if allow_private:
        _host_and_port(url)  # any host will do: no lookup needed
    else:
        resolve_target(url, allow_private=False)


def signature(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(body: bytes, header: str, secret: str, now: float | None = None) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent."""
    # The header is the sender's input: anything odd is a mismatch, never an exception
    # (compare_digest raises on non-ASCII str; a huge t overflows the float arithmetic).
    if not header.isascii():
        return False
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    t = fields.get("t", "")
    if not (t.isdigit() and len(t) <= TIMESTAMP_DIGITS):
        return False
    timestamp = int(t)
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
        addresses = await asyncio.to_thread(resolve_target, url, allow_private)
        origin = httpx.URL(url)
    except CallbackUnresolvedError as err:  # a DNS hiccup is worth another try
        raise TransientError(f"callback_url: {err}") from err
    except (CallbackTargetError, httpx.InvalidURL) as err:
        raise PermanentError(f"callback_url refused: {err}") from err
    body = json.dumps(summary, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: signature(body, secret, int(time.time())),
        "X-Callback-Id": f"{summary['job_id']}-completed",
        # The request goes to an address, not the name: the receiver still sees the name...
        "Host": origin.netloc.decode("ascii"),
    }
    # ...and so does TLS, as the server name sent and the one the certificate must match.
    extensions = {"sni_hostname": origin.raw_host.decode("ascii")}
    try:
        # One deadline for the whole exchange, every address tried included, and at most
        # REPLY_MAX bytes of the answer read: a receiver cannot hold a delivery open, or feed
        # it, for ever. An explicit transport: env proxies would connect elsewhere, or break
        # the TLS name (httpcore's proxy tunnels ignore sni_hostname).
        async with (
            asyncio.timeout(timeout_s),
            httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(), timeout=timeout_s, follow_redirects=False
            ) as http,
        ):
            for attempt, address in enumerate(addresses, 1):
                pinned = origin.copy_with(host=str(address))
                try:
                    async with http.stream(
                        "POST", pinned, content=body, headers=headers, extensions=extensions
                    ) as response:
                        reply = b""
                        async for part in response.aiter_bytes():
                            reply += part
                            if len(reply) >= REPLY_MAX:
                                break
                    break
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    # Nothing was sent: the next address is safe to try.
                    if attempt == len(addresses):
                        raise
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
    secret = await asyncio.to_thread(secrets.callback_secret)  # an SSM read when not cached
    if not secret:
        raise PermanentError("CALLBACK_SECRET is not set: callbacks are always signed")
    code = await deliver(
        job.spec.callback_url,
        summary.model_dump(mode="json"),
        secret=secret,
        allow_private=settings.allow_private_callbacks,
        timeout_s=settings.callback_timeout_s,
    )
    return f"delivered ({code})"
