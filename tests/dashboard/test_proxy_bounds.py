"""The /cloud proxy against a cloud API that misbehaves: one overall deadline, a capped and
streamed read of its answer (counted as decoded), and 502s that say what failed in words
without naming the upstream or echoing its body (the log keeps those)."""

from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response, StreamingResponse

from tests.support import ServerThread, set_settings, wait_for

MIB = 2**20


class Upstream:
    """A stand-in cloud API: slow, huge, a gzip bomb, or a 500 with a secret in its body.
    It records how much of a streamed answer it got out and whether the reader hung up."""

    def __init__(self) -> None:
        self.sent = 0
        self.finished = False
        self.closed = False
        self.app = FastAPI()

        async def counted(chunks: int, size: int, pause_s: float) -> AsyncIterator[bytes]:
            try:
                for _ in range(chunks):
                    await asyncio.sleep(pause_s)
                    yield b" " * size
                    self.sent += size
                self.finished = True
            finally:  # also when the proxy hangs up: the stream is closed under us
                self.closed = True

        @self.app.get("/Prod/jobs")
        async def slow() -> StreamingResponse:  # one byte every 4 s for a minute
            return StreamingResponse(counted(15, 1, 4.0), media_type="application/json")

        @self.app.get("/Prod/jobs/huge")
        async def huge() -> StreamingResponse:  # 64 MiB of JSON whitespace
            return StreamingResponse(counted(64, MIB, 0), media_type="application/json")

        @self.app.get("/Prod/jobs/bomb")
        async def bomb() -> Response:  # 128 MiB once inflated, ~130 KB on the wire
            return Response(
                gzip_bomb(), media_type="application/json", headers={"content-encoding": "gzip"}
            )

        @self.app.get("/Prod/jobs/broken")
        async def broken() -> Response:
            return Response("Traceback: SECRET-upstream-detail", 500, media_type="text/plain")


def gzip_bomb() -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip stream
    zeros = b"\0" * MIB
    return b"".join(packer.compress(zeros) for _ in range(128)) + packer.flush()


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Upstream, str]]:
    stand_in = Upstream()
    server = ServerThread(stand_in.app).start()
    set_settings(
        monkeypatch,
        AWS_START_URL=f"{server.url}/Prod/start",
        CLOUD_API_KEY="ck",
        CLOUD_PROXY_DEADLINE_S="1",
        CLOUD_PROXY_MAX_MIB="1",
    )
    yield stand_in, server.url
    server.stop()


def peak_bytes_of(call: Any) -> tuple[Any, int]:
    """What `call()` returns, and the peak of Python's allocations (this process: the app and
    the stand-in run in its threads) while it ran."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_answer_that_trickles_is_cut_at_the_deadline(
    api: httpx.Client, upstream: tuple[Upstream, str]
) -> None:
    stand_in, _ = upstream
    began = time.monotonic()
    answer = api.get("/cloud/jobs", timeout=10)
    took = time.monotonic() - began
    assert answer.status_code == 502
    assert answer.json()["message"] == "the cloud API did not answer within 1 s"
    # A bound, not a speed target: the stand-in would have taken 60 s.
    assert took < 5, took
    wait_for(lambda: stand_in.closed)
    assert not stand_in.finished


def test_an_answer_over_the_cap_is_refused_without_being_held_whole(
    api: httpx.Client, upstream: tuple[Upstream, str]
) -> None:
    stand_in, _ = upstream
    answer, peak = peak_bytes_of(lambda: api.get("/cloud/jobs/huge", timeout=30))
    assert answer.status_code == 502
    assert answer.json()["message"] == "the cloud API's answer was larger than 1 MiB"
    assert peak < 16 * MIB, peak  # not the 64 MiB answer
    wait_for(lambda: stand_in.closed)  # the proxy hung up, and the stand-in stopped early
    assert not stand_in.finished and stand_in.sent < 32 * MIB, stand_in.sent


def test_a_gzip_bomb_is_refused_as_it_inflates(
    api: httpx.Client, upstream: tuple[Upstream, str]
) -> None:
    answer, peak = peak_bytes_of(lambda: api.get("/cloud/jobs/bomb", timeout=30))
    assert answer.status_code == 502
    assert answer.json()["message"] == "the cloud API's answer was larger than 1 MiB"
    assert peak < 16 * MIB, peak  # not the 128 MiB it inflates to


def test_the_502s_name_neither_the_upstream_nor_its_body_and_the_log_keeps_both(
    api: httpx.Client, upstream: tuple[Upstream, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = upstream
    with caplog.at_level(logging.WARNING):
        answer = api.get("/cloud/jobs/broken")
    assert answer.status_code == 502
    assert answer.json()["message"] == "the cloud API answered 500"
    assert url not in answer.text and "SECRET" not in answer.text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert url in logged and "SECRET-upstream-detail" in logged
