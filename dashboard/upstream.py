"""One call to the cloud API on the dashboard's behalf, bounded: one deadline for the whole call
(connect, send, answer, body: `CLOUD_PROXY_DEADLINE_S`) and a cap on the answer's size, counted
as it is decoded (`CLOUD_PROXY_MAX_MIB`), so an answer that trickles, a huge one or a gzip bomb
costs the app at most that time and that memory.

Its 502s say what failed in words; the URL and what the upstream sent go to the log only (a
caller of the dashboard need not learn where the cloud API is, nor read its tracebacks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from typing import Any

import httpx
from fastapi import HTTPException, status
from fastapi.responses import Response

from chunking.settings import get_settings

MIB = 2**20
# Only what `Inflater` decodes with a bound: a compliant API then sends nothing else.
ACCEPT_ENCODING = "gzip, deflate"

logger = logging.getLogger("long_jobs.dashboard")


class UpstreamFault(Exception):
    """The cloud API's answer cannot be passed on: `said` is for the caller, `detail` the log."""

    def __init__(self, said: str, detail: str = "") -> None:
        super().__init__(said)
        self.said = said
        self.detail = detail


class Inflater:
    """An answer's body as decoded, never more than `cap` bytes of it.

    zlib is asked each time for at most what is left of the cap (plus one, to tell "exactly
    the cap" from "more"), so a bomb stops at the cap instead of inflating a whole network read
    (64 KiB of gzip can inflate to 64 MiB) before anything is counted."""

    def __init__(self, encoding: str, cap: int) -> None:
        self.cap = cap
        self.size = 0
        self.parts: list[bytes] = []
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self.zlib = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            self.zlib = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header, either
        else:
            raise UpstreamFault(
                "the cloud API answered in an encoding the app does not read",
                f"content-encoding {encoding!r}",
            )

    def feed(self, data: bytes) -> None:
        if self.zlib is None:
            self._keep(data)
            return
        try:
            while data:
                self._keep(self.zlib.decompress(data, self.cap - self.size + 1))
                data = self.zlib.unconsumed_tail
        except zlib.error as err:
            raise UpstreamFault("the cloud API's answer could not be decoded", str(err)) from err

    def body(self) -> bytes:
        if self.zlib is not None:
            self._keep(self.zlib.flush())
        return b"".join(self.parts)

    def _keep(self, decoded: bytes) -> None:
        self.size += len(decoded)
        if self.size > self.cap:
            raise UpstreamFault(
                f"the cloud API's answer was larger than {self.cap // MIB} MiB",
                f"more than {self.cap} bytes decoded",
            )
        self.parts.append(decoded)


async def call(method: str, url: str, headers: dict[str, str], **request: Any) -> Response:
    """The cloud API's answer as it is, except where the fault is ours or it is not an
    answer of the cloud API's (then a 502 saying which)."""
    settings = get_settings()
    deadline_s = settings.cloud_proxy_deadline_s
    headers = {**headers, "accept-encoding": ACCEPT_ENCODING}
    try:
        async with asyncio.timeout(deadline_s):
            code, body = await read_capped(
                method, url, headers, settings.cloud_proxy_max_mib * MIB, **request
            )
    except (TimeoutError, httpx.TimeoutException) as err:
        fault = UpstreamFault(
            f"the cloud API did not answer within {deadline_s:g} s", type(err).__name__
        )
        raise bad_gateway(method, url, fault) from err
    except httpx.ConnectError as err:
        fault = UpstreamFault("the cloud API did not answer: it could not be reached", repr(err))
        raise bad_gateway(method, url, fault) from err
    except httpx.HTTPError as err:
        fault = UpstreamFault("the cloud API did not answer: the connection failed", repr(err))
        raise bad_gateway(method, url, fault) from err
    except UpstreamFault as refused:
        raise bad_gateway(method, url, refused) from refused
    if code == status.HTTP_403_FORBIDDEN:
        # API Gateway refuses a missing or wrong key with 403: our CLOUD_API_KEY, not the
        # caller's request, is what is wrong.
        fault = UpstreamFault("the cloud API refused CLOUD_API_KEY (403): set the stack's API key")
        raise bad_gateway(method, url, fault)
    if code >= 500:
        said = f"the cloud API answered {code}"
        raise bad_gateway(method, url, UpstreamFault(said, repr(body[:300])))
    try:
        json.loads(body)
    except ValueError:  # e.g. a proxy's HTML page: not an answer of the cloud API's
        said = f"the cloud API answered {code} with something other than JSON"
        raise bad_gateway(method, url, UpstreamFault(said, repr(body[:300]))) from None
    return Response(body, code, media_type="application/json")


async def read_capped(
    method: str, url: str, headers: dict[str, str], cap: int, **request: Any
) -> tuple[int, bytes]:
    """The answer's status and decoded body, read as it streams in; hangs up past `cap`."""
    async with (
        httpx.AsyncClient(timeout=get_settings().cloud_proxy_deadline_s) as client,
        client.stream(method, url, headers=headers, **request) as answer,
    ):
        body = Inflater(answer.headers.get("content-encoding", ""), cap)
        async for data in answer.aiter_raw():
            body.feed(data)
        return answer.status_code, body.body()


def bad_gateway(method: str, url: str, fault: UpstreamFault) -> HTTPException:
    logger.warning("/cloud: %s %s: %s (%s)", method, url, fault.said, fault.detail or "-")
    return HTTPException(status.HTTP_502_BAD_GATEWAY, detail=fault.said)
