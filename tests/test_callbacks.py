"""Completion callbacks on the local path: target checks, signatures, and delivery by the
send_callback function (in the SDK's in-process executor) to a local receiver."""

from __future__ import annotations

import json
import time

import httpx
import inngest
import pytest
from inngest.experimental import mocked

from chunking.callbacks import CallbackTargetError, check_target, signature, verify
from chunking.settings import get_settings
from functions.events import JOB_COMPLETED, PROCESS_CHUNK
from functions.process_chunk import process_chunk
from functions.send_callback import CALLBACK_RETRIES, send_callback
from tests.callback_receiver import CallbackReceiver
from tests.conftest import CALLBACK_SECRET as SECRET
from tests.support import FakeInngestApi, replay


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
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "callback_url"] and "link-local" in error["msg"]
    monkeypatch.delenv("CALLBACK_SECRET")
    get_settings.cache_clear()
    response = api.post("/jobs", json={"callback_url": "https://93.184.216.34/hook"})
    assert response.status_code == 422 and "CALLBACK_SECRET" in response.text
    assert fake_inngest.events == []


def test_jobs_without_a_callback_url_send_nothing(
    api: httpx.Client, fake_inngest: FakeInngestApi, receiver: tuple[CallbackReceiver, str]
) -> None:
    hook, _url = receiver
    run_job(api, fake_inngest, {"total_items": 10, "chunk_size": 10, "item_delay_ms": 0})
    result = replay(send_callback, fake_inngest.named(JOB_COMPLETED)[0])
    assert result.output == "no callback_url" and hook.deliveries == []
