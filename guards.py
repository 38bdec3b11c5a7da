"""The local app's guards, in front of its routes.

- `InngestSignatureWindow`: in production mode, every call to the Inngest serve endpoint that
  runs code or syncs (POST, PUT) must carry a signature that is valid, at most five minutes
  from now (Inngest's signing spec) and not seen before by any replica or worker (the job
  store's `claim_once`). The SDK checks the HMAC but not the time, so without this a captured
  request could be replayed for ever.
- `BodyLimit`: a /jobs (or POST /inputs) request body over MAX_BODY_BYTES is refused (413)
  while it arrives, before anything is parsed or held whole.

Both match the route's path (Starlette's `get_route_path`: the request's path less the ASGI
`root_path`), as the router does: behind a proxy that strips a prefix (`uvicorn --root-path
/svc`), the raw path is `/svc/api/inngest` and would match nothing, switching the guards off.
- `require_api_key`, `require_json`, `no_cross_site`: the /jobs routes' dependencies;
  `guard_submission`: the same three, called by POST /jobs itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.security import APIKeyHeader
from inngest._internal import net, server_lib
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunking.api_errors import MAX_BODY_BYTES
from chunking.tenancy import Caller, caller_of_key

logger = logging.getLogger("long_jobs.guards")

SIGNATURE_MAX_AGE_S = 300  # Inngest's signing spec: refuse a timestamp further than 5 min away
# Inngest sends a run's event and step state in the body: generous, but not unbounded.
INNGEST_MAX_BODY_BYTES = 64 * 2**20


async def _send_json(send: Send, status_code: int, body: dict[str, str]) -> None:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": status_code, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it is over `limit` bytes."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then the real channel (a streaming response waits on it to learn
    that the client went away)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class InngestSignatureWindow:
    """Refuse stale, future, timestamp-less and replayed signed calls to the serve endpoint."""

    def __init__(
        self,
        app: ASGIApp,
        serve_path: str,
        signing_keys: tuple[str | None, str | None],
        claim_once: Callable[[str, float, float], bool],
    ) -> None:
        self.app = app
        self.serve_path = serve_path
        self.signing_key, self.signing_key_fallback = signing_keys
        # The job store's claim_once: a signature used on one replica or worker is used on all.
        self.claim_once = claim_once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or get_route_path(scope) != self.serve_path:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        signature_header = headers.get(server_lib.HeaderKey.SIGNATURE.value)
        if scope["method"] not in ("POST", "PUT") and signature_header is None:
            await self.app(scope, receive, send)  # unsigned introspection: the SDK limits it
            return
        now = time.time()
        # What the header alone tells is checked before a byte of the body is read.
        problem = self.header_refusal(signature_header, now)
        body = b""
        if problem is None:
            read = await _read_body(receive, INNGEST_MAX_BODY_BYTES)
            problem = "body too large" if read is None else None
            body = read or b""
        if problem is None:
            problem = self.body_refusal(body, headers)
        if problem is None and not await asyncio.to_thread(
            self.claim_once,
            f"inngest-signature:{self._fields(signature_header or '')[1]}",
            now,
            2 * SIGNATURE_MAX_AGE_S,
        ):
            problem = "signature already used (a replayed request)"
        if problem is not None:
            client = scope.get("client") or ("?", 0)
            logger.warning(
                "refused %s %s from %s: %s", scope["method"], self.serve_path, client[0], problem
            )
            await _send_json(send, 401, {"message": "Unauthorized"})
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    def _fields(header: str) -> tuple[str, str]:
        fields = urllib.parse.parse_qs(header)
        return fields.get("t", [""])[0], fields.get("s", [""])[0]

    def header_refusal(self, header: str | None, now: float) -> str | None:
        """Why the signature header alone is refused (no secrets in it), or None."""
        if header is None:
            return "no signature"
        t, s = self._fields(header)
        if not t.isascii() or not t.isdigit() or len(t) > 12 or not s:
            return "malformed signature header (needs t=<unix seconds>&s=<hex>)"
        age = now - int(t)
        if abs(age) > SIGNATURE_MAX_AGE_S:
            return f"signature timestamp {age:+.0f} s from now, outside ±{SIGNATURE_MAX_AGE_S} s"
        return None

    def body_refusal(self, body: bytes, headers: dict[str, str]) -> str | None:
        """Why a fresh-looking call is refused: a bad HMAC (the SDK's own check)."""
        verified = net.validate_request_sig(
            body=body,
            headers=headers,
            mode=server_lib.ServerKind.CLOUD,
            signing_key=self.signing_key,
            signing_key_fallback=self.signing_key_fallback,
        )
        if isinstance(verified, Exception):
            return f"signature does not verify ({type(verified).__name__})"
        return None


class BodyLimit:
    """Refuse request bodies over `limit` bytes under the `prefixes` (and on the exact `paths`)
    with 413, counting as they come."""

    def __init__(
        self,
        app: ASGIApp,
        prefixes: tuple[str, ...],
        paths: tuple[str, ...] = (),
        limit: int = MAX_BODY_BYTES,
    ) -> None:
        self.app, self.prefixes, self.paths, self.limit = app, prefixes, paths, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = get_route_path(scope) if scope["type"] == "http" else ""
        if not path.startswith(self.prefixes) and path not in self.paths:
            await self.app(scope, receive, send)
            return
        too_big = {"message": f"request body over {self.limit} bytes: refused"}
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_json(send, 413, too_big)
                return
        body = await _read_body(receive, self.limit)
        if body is None:
            await _send_json(send, 413, too_big)
            return
        await self.app(scope, _replay(body, receive), send)


_api_key_header = APIKeyHeader(name="x-api-key", auto_error=False)

# The route guards below only compute: `async def`, so FastAPI runs them on the event loop (a
# plain `def` would be a trip to its thread pool and back, per guard, per request).


async def require_api_key(key: Annotated[str | None, Depends(_api_key_header)]) -> Caller:
    """With API_KEY (or tenant keys, API_KEYS) set, every /jobs route needs a key in
    `x-api-key` (as the cloud path's API): who is asking (chunking.tenancy)."""
    return _refuse_without_api_key(key)


async def no_cross_site(
    request: Request, sec_fetch_site: Annotated[str | None, Header()] = None
) -> None:
    """A browser says where a request comes from: a page of another site may not change jobs
    (no cancel or submit by a link or a form elsewhere). Clients other than browsers send
    no Sec-Fetch-Site and are not affected."""
    _refuse_cross_site(request.method, sec_fetch_site)


async def require_json(content_type: Annotated[str | None, Header()] = None) -> None:
    """POST /jobs takes JSON only: a form or a bodiless POST from another site is no JobSpec."""
    _refuse_unless_json(content_type)


def guard_submission(request: Request) -> Caller:
    """POST /jobs' three guards in one call, made by the route itself. As dependencies they
    cost a fifth of its CPU under load (FastAPI solves each one per request), on the route
    every job comes in by (BENCHMARKS.md, accepting jobs under load). Who is asking."""
    headers = request.headers
    caller = _refuse_without_api_key(headers.get("x-api-key"))
    _refuse_cross_site(request.method, headers.get("sec-fetch-site"))
    _refuse_unless_json(headers.get("content-type"))
    return caller


def _refuse_without_api_key(key: str | None) -> Caller:
    caller = caller_of_key(key)
    if caller is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing or wrong x-api-key")
    return caller


def _refuse_cross_site(method: str, sec_fetch_site: str | None) -> None:
    if method not in ("GET", "HEAD") and sec_fetch_site in ("cross-site", "same-site"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="cross-site requests are refused")


def _refuse_unless_json(content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"Content-Type must be application/json (got {media_type or 'none'!r})",
        )
