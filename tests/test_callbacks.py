"""Completion callbacks on the local path: target checks, signatures, and delivery by the
send_callback function (in the SDK's in-process executor) to a local receiver."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from typing import Any

import httpx
import inngest
import pytest
from inngest.experimental import mocked

from chunking.callbacks import (
    CallbackTargetError,
    check_target,
    deliver,
    is_public_address,
    signature,
    verify,
)
from chunking.errors import PermanentError, TransientError
from chunking.settings import get_settings
from functions.events import JOB_COMPLETED, PROCESS_CHUNK
from functions.process_chunk import process_chunk
from functions.send_callback import CALLBACK_RETRIES, send_callback
from tests.callback_receiver import CallbackReceiver
from tests.conftest import CALLBACK_SECRET as SECRET
from tests.support import FakeInngestApi, replay, run_finishes


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9000/hook", "http://localhost/hook", "http://10.1.2.3/x",
     "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://192.168.0.7/x",
     "http://no-such-host.invalid/x", "ftp://example.com/x", "http://example.com:99999/x",
     "http://[::1"],
)  # fmt: skip
def test_non_public_or_odd_targets_are_refused(url: str) -> None:
    with pytest.raises(CallbackTargetError):
        check_target(url, allow_private=False)


def test_public_addresses_pass_and_private_ones_pass_when_allowed() -> None:
    check_target("https://93.184.216.34/hook", allow_private=False)  # a literal: no DNS needed
    check_target("http://127.0.0.1:9000/hook", allow_private=True)


def test_signature_verifies_only_the_same_body_key_and_a_recent_time() -> None:
    body, now = b'{"job_id":"j"}', int(time.time())
    header = signature(body, SECRET, now)
    assert header.startswith(f"t={now},v1=")
    assert verify(body, header, SECRET)
    assert not verify(body + b" ", header, SECRET)
    assert not verify(body, header, "another-secret")
    assert not verify(body, signature(body, SECRET, now - 600), SECRET)  # replayed later
    assert not verify(body, "garbage", SECRET)


def run_job(api: httpx.Client, fake_inngest: FakeInngestApi, spec: dict[str, object]) -> str:
    from functions.events import START_JOB
    from functions.start_job import start_job

    response = api.post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    replay(start_job, fake_inngest.named(START_JOB)[-1])
    for event in fake_inngest.named(PROCESS_CHUNK):
        replay(process_chunk, event)
    run_finishes(fake_inngest)
    job_id: str = response.json()["job_id"]
    return job_id


def test_a_finished_job_posts_its_signed_summary_retrying_a_failing_receiver(
    api: httpx.Client,
    fake_inngest: FakeInngestApi,
    receiver: tuple[CallbackReceiver, str],
) -> None:
    hook, url = receiver
    hook.answers = [503, 500]  # down twice, then up
    job_id = run_job(api, fake_inngest, {"total_items": 30, "chunk_size": 10, "item_delay_ms": 0,
                                         "callback_url": url})  # fmt: skip
    [completed] = fake_inngest.named(JOB_COMPLETED)
    result = replay(send_callback, completed)
    assert result.status is mocked.Status.COMPLETED and result.output == "delivered (200)"
    assert len(hook.deliveries) == 3  # two retries, then delivered
    delivery = hook.deliveries[-1]
    assert verify(delivery.body, delivery.headers["x-signature"], SECRET)
    assert delivery.headers["x-callback-id"] == f"{job_id}-completed"
    summary = json.loads(delivery.body)
    assert (summary["job_id"], summary["status"], summary["chunks_succeeded"]) == (
        job_id, "succeeded", 3,
    )  # fmt: skip


def test_a_receiver_that_refuses_is_not_retried(
    api: httpx.Client, fake_inngest: FakeInngestApi, receiver: tuple[CallbackReceiver, str]
) -> None:
    hook, url = receiver
    hook.answers = [410] * (1 + CALLBACK_RETRIES)
    run_job(api, fake_inngest, {"total_items": 10, "chunk_size": 10, "item_delay_ms": 0,
                                "callback_url": url})  # fmt: skip
    result = replay(send_callback, fake_inngest.named(JOB_COMPLETED)[0])
    assert result.status is mocked.Status.FAILED
    assert isinstance(result.error, inngest.NonRetriableError) and "410" in str(result.error)
    # The executor retries even NonRetriableError (see the README); Inngest would not. What
    # matters here is the error kind; the count bounds what a real run could cost.
    assert 1 <= len(hook.deliveries) <= 1 + CALLBACK_RETRIES


def test_private_targets_are_refused_at_submission(
    api: httpx.Client, fake_inngest: FakeInngestApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLBACK_SECRET", SECRET)
    get_settings.cache_clear()
    response = api.post("/jobs", json={"callback_url": "http://169.254.169.254/latest"})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "callback_url" and "link-local" in error["message"]
    monkeypatch.delenv("CALLBACK_SECRET")
    get_settings.cache_clear()
    response = api.post("/jobs", json={"callback_url": "https://93.184.216.34/hook"})
    assert response.status_code == 400 and "CALLBACK_SECRET" in response.text
    assert fake_inngest.events == []


def test_jobs_without_a_callback_url_send_nothing(
    api: httpx.Client, fake_inngest: FakeInngestApi, receiver: tuple[CallbackReceiver, str]
) -> None:
    hook, _url = receiver
    run_job(api, fake_inngest, {"total_items": 10, "chunk_size": 10, "item_delay_ms": 0})
    result = replay(send_callback, fake_inngest.named(JOB_COMPLETED)[0])
    assert result.output == "no callback_url" and hook.deliveries == []


# -- A name resolved once, every address checked, and the connection pinned to a checked one.
# No test here sends a packet off this machine: names resolve through a stand-in resolver, and
# the ones that would reach a public address go to a stand-in transport instead of a socket.

PUBLIC_IP = "93.184.216.34"


def resolver(
    monkeypatch: pytest.MonkeyPatch, name: str, *answers: list[str]
) -> list[tuple[str, int]]:
    """socket.getaddrinfo answering `name` with answers[0] the first time, answers[1] the next
    (the last one from then on); returns the lookups made of `name`."""
    real, lookups = socket.getaddrinfo, []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if (host.decode() if isinstance(host, bytes) else host) != name:
            return real(host, port, *args, **kwargs)
        lookups.append((name, port))
        ips = answers[min(len(lookups), len(answers)) - 1]
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port)) for ip in ips]  # fmt: skip

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def fake_transport(
    monkeypatch: pytest.MonkeyPatch, unreachable: frozenset[str] = frozenset()
) -> list[httpx.Request]:
    """Every request httpx would send is recorded and answered 200 (ConnectError for a host in
    `unreachable`), no socket opened; returns the requests."""
    sent: list[httpx.Request] = []

    async def handle(_transport: httpx.AsyncHTTPTransport, request: httpx.Request) -> Any:
        sent.append(request)
        if request.url.host in unreachable:
            raise httpx.ConnectError("unreachable", request=request)
        return httpx.Response(200, request=request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", handle)
    return sent


def deliver_now(url: str, allow_private: bool = False) -> int:
    delivery = deliver(url, {"job_id": "j"}, secret=SECRET, allow_private=allow_private,
                       timeout_s=5)  # fmt: skip
    return asyncio.get_event_loop().run_until_complete(delivery)


def test_delivery_connects_to_the_address_it_checked_not_a_second_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DNS rebinding: public when checked, loopback when httpx would have looked again.
    lookups = resolver(monkeypatch, "hook.example", [PUBLIC_IP], ["127.0.0.1"])
    sent = fake_transport(monkeypatch)
    assert deliver_now("https://hook.example:8443/cb?x=1") == 200
    [request] = sent
    assert str(request.url) == f"https://{PUBLIC_IP}:8443/cb?x=1"
    assert request.headers["host"] == "hook.example:8443"
    assert request.extensions["sni_hostname"] == "hook.example"  # TLS name and cert check
    assert lookups == [("hook.example", 8443)]


def test_delivery_tries_the_checked_addresses_in_order_until_one_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups = resolver(monkeypatch, "hook.example", ["2606:4700:4700::1111", PUBLIC_IP])
    sent = fake_transport(monkeypatch, unreachable=frozenset({"2606:4700:4700::1111"}))
    assert deliver_now("http://hook.example/cb") == 200
    assert [str(request.url) for request in sent] == [
        "http://[2606:4700:4700::1111]/cb", f"http://{PUBLIC_IP}/cb",
    ]  # fmt: skip
    assert {request.headers["host"] for request in sent} == {"hook.example"}
    assert lookups == [("hook.example", 80)]


def test_delivery_refuses_a_name_with_any_non_public_address_and_retries_an_unresolved_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver(monkeypatch, "hook.example", [PUBLIC_IP, "10.0.0.8"])
    sent = fake_transport(monkeypatch)
    with pytest.raises(PermanentError, match=r"10\.0\.0\.8"):
        deliver_now("https://hook.example/cb")
    resolver(monkeypatch, "gone.example", [])
    with pytest.raises(TransientError, match="does not resolve"):
        deliver_now("https://gone.example/cb")
    assert sent == []


def test_a_pinned_delivery_by_name_reaches_a_real_receiver(
    receiver: tuple[CallbackReceiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hook, url = receiver
    port = httpx.URL(url).port
    # Nothing listens on 127.0.0.2 (still loopback): the first address fails to connect.
    resolver(monkeypatch, "receiver.test", ["127.0.0.2", "127.0.0.1"])
    assert deliver_now(f"http://receiver.test:{port}/hook", allow_private=True) == 200
    [delivery] = hook.deliveries
    assert delivery.headers["host"] == f"receiver.test:{port}"
    assert verify(delivery.body, delivery.headers["x-signature"], SECRET)
    assert json.loads(delivery.body) == {"job_id": "j"}


# -- Addresses: IPv6 forms that carry an IPv4 address are judged by that address.


@pytest.mark.parametrize(
    "host",
    ["::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "2002:a9fe:a9fe::",
     "fec0::1", "::ffff:10.0.0.1", "64:ff9b:1::5db8:d822", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
     "ff0e::1", "2001:db8::1", "::"],
)  # fmt: skip
def test_ipv6_addresses_embedding_a_non_public_ipv4_or_not_global_are_refused(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver(monkeypatch, "unused.example", [])  # a literal is judged without a lookup
    with pytest.raises(CallbackTargetError):
        check_target(f"http://[{host}]/hook", allow_private=False)
    assert not is_public_address(ipaddress.ip_address(host))


@pytest.mark.parametrize(
    "host", [PUBLIC_IP, "[2606:4700:4700::1111]", "[2002:5db8:d822::]", "[64:ff9b::5db8:d822]"]
)
def test_public_literals_pass_without_a_lookup(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"looked up {args[0]!r}")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    check_target(f"https://{host}/hook", allow_private=False)


@pytest.mark.parametrize(
    "header",
    ["", "v1=abc", "t=,v1=abc", "t=abc,v1=abc", "t=1e3,v1=x", "t=+1,v1=x", f"t={'9' * 400},v1=x",
     f"t={'9' * 5000},v1=x", "t=\u0661\u0667" + "\u0660" * 8 + ",v1=x", "t=\u00e9",
     "SIGNED\u00e9", "SIGNED\ud800", "SIGNEDf,t", "v1=SIGNED"],
)  # fmt: skip
def test_verify_is_false_for_a_malformed_or_non_ascii_header(header: str) -> None:
    # SIGNED: a valid header less its last hex digit, so "SIGNED\u00e9" has the expected length
    # and a recent t, and reaches the comparison, which raised on non-ASCII text.
    body = b'{"job_id":"j"}'
    signed = signature(body, SECRET, int(time.time()))
    assert verify(body, header.replace("SIGNED", signed[:-1]), SECRET) is False
