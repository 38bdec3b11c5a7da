"""tests/batch_api.py through the real openai SDK: the Files and Batch API stand-in answers as
the provider does (the SDK's own types parse every answer), on the same base URL as realtime."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from openai.types import Batch, BatchError, FileDeleted, FileObject

from tests.batch_api import FakeBatchApi
from tests.llm_server import FakeModelServer
from tests.support import ServerThread

ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeModelServer, str]]:
    fake = FakeModelServer()
    server = ServerThread(fake.app).start()
    yield fake, server.url
    server.stop()


@pytest.fixture
def api(served: tuple[FakeModelServer, str]) -> FakeBatchApi:
    """The stand-in with its default knobs back (tests change them)."""
    batch = served[0].batch
    batch.turnaround_s, batch.validating_s, batch.finalizing_s = 1.0, None, None
    batch.cancel_s, batch.enqueued_token_limit = 0.5, None
    batch.max_file_bytes, batch.max_requests_per_batch = 200 * 1024 * 1024, 50_000
    return batch


@pytest.fixture
def url(served: tuple[FakeModelServer, str]) -> str:
    return served[1]


@pytest.fixture
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0) as sdk:
        yield sdk


def request(custom_id: str, prompt: str, model: str = "test-model", **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": ENDPOINT,
        "body": {"model": model, "messages": messages, **body},
    }


def upload(client: openai.OpenAI, lines: Sequence[dict[str, Any] | str]) -> FileObject:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return client.files.create(file=("input.jsonl", text.encode()), purpose="batch")


def submit(client: openai.OpenAI, lines: Sequence[dict[str, Any] | str], **metadata: str) -> Batch:
    file = upload(client, lines)
    return client.batches.create(
        input_file_id=file.id,
        endpoint=ENDPOINT,
        completion_window="24h",
        metadata=metadata or None,
    )


def raw_batch(url: str, batch_id: str) -> dict[str, Any]:
    """The JSON as sent, checked against the SDK's type: no key it lacks, none missing."""
    raw: dict[str, Any] = httpx.get(f"{url}/v1/batches/{batch_id}").json()
    fields = Batch.model_fields
    assert set(raw) <= set(fields)
    assert {name for name, info in fields.items() if info.is_required()} <= set(raw)
    Batch.model_validate(raw)
    return raw


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def run_out(api: FakeBatchApi, client: openai.OpenAI, batch: Batch) -> Batch:
    """The batch once it has ended, moving the clock rather than sleeping."""
    api.clock.advance(api.turnaround_s * 1.5 + 1)
    return client.batches.retrieve(batch.id)


def test_a_batch_goes_through_its_stages_and_answers_as_realtime(
    api: FakeBatchApi, client: openai.OpenAI, url: str
) -> None:
    api.turnaround_s, api.validating_s, api.finalizing_s = 0.6, 0.3, 0.3
    prompts = [f"question {i}" for i in range(6)]
    batch = submit(client, [request(f"r{i}", p) for i, p in enumerate(prompts)], job="j1")
    assert (batch.status, batch.metadata, batch.model) == (
        "validating",
        {"job": "j1"},
        "test-model",
    )
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert batch.expires_at == batch.created_at + 24 * 3600
    seen, completed = [batch.status], [0]
    deadline = time.monotonic() + 10
    while seen[-1] != "completed" and time.monotonic() < deadline:
        time.sleep(0.02)
        now = client.batches.retrieve(batch.id)
        assert now.request_counts is not None
        completed.append(now.request_counts.completed)
        if now.status != seen[-1]:
            seen.append(now.status)
            raw_batch(url, batch.id)
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    assert completed == sorted(completed) and 0 < len(set(completed)) > 2  # grew in steps
    done = Batch.model_validate(raw_batch(url, batch.id))
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (6, 6)
    assert done.error_file_id is None and done.errors is None
    assert None not in (done.in_progress_at, done.finalizing_at, done.completed_at)
    assert done.usage is not None and done.usage.input_tokens == 12  # 2 words a prompt

    output = lines_of(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"r{i}" for i in reversed(range(6))]
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
        answer = openai.types.chat.ChatCompletion.model_validate(line["response"]["body"])
        prompt = prompts[int(line["custom_id"][1:])]
        realtime = client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": prompt}]
        )
        assert answer.model_dump(exclude={"id", "created"}) == realtime.model_dump(
            exclude={"id", "created"}
        )


def test_a_request_the_model_refuses_goes_to_the_error_file_and_transport_markers_do_nothing(
    api: FakeBatchApi, client: openai.OpenAI
) -> None:
    prompts = [
        "too long [400-context]",
        "[401] no key",
        "[refuse] this",
        "[429] ok",
        "[500] ok",
        "[429x2] ok",
        "[hang] ok",
        "[slow] ok",
    ]
    batch = run_out(api, client, submit(client, [request(p, p) for p in prompts]))
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (6, 2)
    errors = {line["custom_id"]: line for line in lines_of(client, batch.error_file_id)}
    assert set(errors) == {"too long [400-context]", "[401] no key"}
    refused = errors["too long [400-context]"]
    assert refused["error"] is None and refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert errors["[401] no key"]["response"]["status_code"] == 401
    answered = {line["custom_id"]: line for line in lines_of(client, batch.output_file_id)}
    assert answered["[refuse] this"]["response"]["body"]["choices"][0]["message"]["content"] is None
    assert answered["[hang] ok"]["response"]["body"]["choices"][0]["message"]["content"] == (
        "echo: [hang] ok"
    )


def test_an_unfinished_request_expires_the_batch_and_expirex1_only_the_first_time(
    api: FakeBatchApi, client: openai.OpenAI, url: str
) -> None:
    batch = run_out(api, client, submit(client, [request("a", "fine"), request("b", "[expire]")]))
    assert batch.status == "expired" and batch.expired_at and batch.completed_at is None
    raw_batch(url, batch.id)
    assert [line["custom_id"] for line in lines_of(client, batch.output_file_id)] == ["a"]
    [expired] = lines_of(client, batch.error_file_id)
    assert expired["custom_id"] == "b" and expired["response"] is None
    assert expired["error"] == {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
    once = f"[expirex1] {uuid.uuid4()}"
    first = run_out(api, client, submit(client, [request("x", once)]))
    second = run_out(api, client, submit(client, [request("x", once)]))
    assert (first.status, first.output_file_id) == ("expired", None)
    assert second.status == "completed" and second.error_file_id is None


def test_a_bad_input_file_fails_the_batch_with_the_providers_codes(
    api: FakeBatchApi, client: openai.OpenAI, url: str
) -> None:
    no_custom_id = request("x", "hi")
    del no_custom_id["custom_id"]
    wrong_url = {**request("w", "hi"), "url": "/v1/embeddings"}
    lines: list[dict[str, Any] | str] = [
        request("a", "hi"),
        "{not json",
        request("a", "again"),
        no_custom_id,
        wrong_url,
        request("m", "hi", model="other-model"),
        request("s", "hi", stream=True),
    ]
    batch = submit(client, lines)
    assert batch.status == "validating"
    failed = run_out(api, client, batch)
    raw_batch(url, batch.id)
    assert failed.status == "failed" and failed.failed_at and failed.in_progress_at is None
    assert failed.output_file_id is None and failed.error_file_id is None
    assert failed.errors is not None and failed.errors.object == "list"
    codes = [(e.code, e.line, e.param) for e in failed.errors.data or []]
    assert codes == [
        ("invalid_json_line", 2, None),
        ("duplicate_custom_id", 3, "custom_id"),
        ("missing_required_parameter", 4, "custom_id"),
        ("invalid_url", 5, "url"),
        ("mismatched_model", 6, "body.model"),
        ("streaming_unsupported", 7, "body.stream"),
    ]
    assert failed.errors.data and failed.errors.data[0].message == (
        "This line is not parseable as valid JSON."
    )


def test_more_requests_than_a_batch_takes_or_an_unknown_file_fail_the_batch(
    api: FakeBatchApi, client: openai.OpenAI
) -> None:
    api.max_requests_per_batch = 3
    big = run_out(api, client, submit(client, [request(f"r{i}", "hi") for i in range(4)]))
    assert big.status == "failed" and big.errors and big.errors.data
    assert big.errors.data[0].code == "too_many_tasks"
    unknown = client.batches.create(
        input_file_id="file-nope", endpoint=ENDPOINT, completion_window="24h"
    )
    assert unknown.status == "validating"
    unknown = run_out(api, client, unknown)
    assert unknown.status == "failed" and unknown.errors and unknown.errors.data
    assert (unknown.errors.data[0].code, unknown.errors.data[0].param) == (
        "invalid_request",
        "file_id",
    )


def test_a_bad_create_is_refused_as_the_provider_refuses_it(client: openai.OpenAI) -> None:
    file = upload(client, [request("a", "hi")])
    with pytest.raises(openai.BadRequestError) as window:
        client.batches.create(
            input_file_id=file.id,
            endpoint=ENDPOINT,
            completion_window="1h",  # type: ignore[arg-type]
        )
    assert window.value.status_code == 400 and window.value.param == "completion_window"
    with pytest.raises(openai.BadRequestError) as endpoint:
        client.batches.create(
            input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    assert endpoint.value.code == "invalid_value" and endpoint.value.param == "endpoint"


def test_over_the_enqueued_token_limit_a_batch_fails_until_others_have_finished(
    api: FakeBatchApi, client: openai.OpenAI
) -> None:
    model = f"model-{uuid.uuid4().hex[:6]}"
    api.enqueued_token_limit = 150
    lines = [request("a", "x" * 40, model=model, max_tokens=90)]  # 40 / 4 + 90 = 100 tokens
    first = submit(client, lines)
    second = submit(client, lines)
    api.clock.advance(api.turnaround_s / 2)  # both validated; the first is in progress
    assert client.batches.retrieve(first.id).status == "in_progress"
    refused = client.batches.retrieve(second.id)
    assert refused.status == "failed" and refused.errors and refused.errors.data
    assert refused.errors.data[0] == BatchError(
        code="token_limit_exceeded",
        message=f"Enqueued token limit reached for {model} in organization org-test. Limit: 150 "
        "enqueued tokens. Please try again once some in_progress batches have been completed.",
        param=None,
        line=None,
    )
    assert run_out(api, client, first).status == "completed"
    assert run_out(api, client, submit(client, lines)).status == "completed"


def test_cancel_keeps_what_was_done_and_lists_the_rest_as_cancelled(
    api: FakeBatchApi, client: openai.OpenAI, url: str
) -> None:
    api.turnaround_s, api.validating_s = 10, 1
    batch = submit(client, [request(f"r{i}", f"q {i}") for i in range(10)])
    api.clock.advance(1 + 4.5)  # 45 % through its turnaround: 4 requests answered
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert cancelling.request_counts is not None and cancelling.request_counts.completed == 4
    raw_batch(url, batch.id)
    api.clock.advance(api.cancel_s)
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at
    assert cancelled.request_counts is not None
    assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (4, 6)
    output = lines_of(client, cancelled.output_file_id)
    assert sorted(line["custom_id"] for line in output) == ["r0", "r1", "r2", "r3"]
    rest = lines_of(client, cancelled.error_file_id)
    assert sorted(line["custom_id"] for line in rest) == [f"r{i}" for i in range(4, 10)]
    assert {line["error"]["code"] for line in rest} == {"batch_cancelled"}
    assert client.batches.cancel(batch.id).status == "cancelled"  # again: as it is

    done = run_out(api, client, submit(client, [request("a", "hi")]))
    with pytest.raises(openai.ConflictError) as ended:
        client.batches.cancel(done.id)
    assert "Cannot cancel a batch with status 'completed'." in str(ended.value)


def test_batches_list_newest_first_a_page_at_a_time(
    api: FakeBatchApi, client: openai.OpenAI, url: str
) -> None:
    created = [submit(client, [request("a", "hi")]).id for _ in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == created[::-1][:2] and page.has_more
    listed = []
    for batch in client.batches.list(limit=2):  # the SDK follows `after` itself
        listed.append(batch.id)
    assert listed[:5] == created[::-1]
    raw = httpx.get(f"{url}/v1/batches", params={"limit": 2, "after": created[-2]}).json()
    assert set(raw) == {"object", "data", "first_id", "last_id", "has_more"}
    assert raw["first_id"] == created[-3] and raw["last_id"] == created[-4]


def test_unknown_ids_are_404s_and_a_deleted_file_is_gone(client: openai.OpenAI) -> None:
    for call in (
        client.files.retrieve,
        client.files.content,
        client.files.delete,
        client.batches.retrieve,
        client.batches.cancel,
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            call("nope")
        assert missing.value.status_code == 404
    file = upload(client, [request("a", "hi")])
    assert FileObject.model_validate(client.files.retrieve(file.id).model_dump()) == file
    assert (file.purpose, file.status, file.filename) == ("batch", "processed", "input.jsonl")
    assert client.files.delete(file.id) == FileDeleted(id=file.id, object="file", deleted=True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)


def test_a_file_over_the_limit_is_refused(api: FakeBatchApi, client: openai.OpenAI) -> None:
    api.max_file_bytes = 1000
    known, on_disk = set(api.files), set(api.storage_dir.iterdir())
    with pytest.raises(openai.BadRequestError) as refused:
        upload(client, [request(f"r{i}", "hi") for i in range(50)])
    assert refused.value.code == "file_too_large" and refused.value.param == "file"
    assert set(api.files) == known and set(api.storage_dir.iterdir()) == on_disk


def test_the_async_client_runs_a_batch_too(api: FakeBatchApi, url: str) -> None:
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="test") as sdk:
            lines = [json.dumps(request("a", "hi")), json.dumps(request("b", "ho"))]
            file = await sdk.files.create(
                file=("in.jsonl", "\n".join(lines).encode()), purpose="batch"
            )
            batch = await sdk.batches.create(
                input_file_id=file.id, endpoint=ENDPOINT, completion_window="24h"
            )
            api.clock.advance(5)
            done = await sdk.batches.retrieve(batch.id)
            assert done.status == "completed" and done.output_file_id
            content = await sdk.files.content(done.output_file_id)
            return [json.loads(line)["custom_id"] for line in content.text.splitlines()]

    assert asyncio.new_event_loop().run_until_complete(run()) == ["b", "a"]


def test_a_100k_line_upload_is_streamed_to_disk_not_held_in_memory(
    api: FakeBatchApi, client: openai.OpenAI, tmp_path: Path
) -> None:
    source = tmp_path / "big.jsonl"
    with source.open("w") as out:
        for i in range(100_000):
            out.write(
                json.dumps(request(f"request-{i}", f"summarise chunk {i} of the text")) + "\n"
            )
    size = source.stat().st_size
    before = api.bytes_uploaded
    tracemalloc.start()
    try:
        with source.open("rb") as handle:
            file = client.files.create(file=handle, purpose="batch")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert file.bytes == size and api.bytes_uploaded - before == size
    assert peak < size / 10, f"{peak:,} bytes allocated at most for a {size:,}-byte upload"
    stored = api.files[file.id].path
    assert stored.parent == api.storage_dir
    assert (
        hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    )
    with client.files.with_streaming_response.content(file.id) as response:
        digest = hashlib.sha256()
        for chunk in response.iter_bytes():
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(source.read_bytes()).digest()
    too_many = run_out(
        api,
        client,
        client.batches.create(input_file_id=file.id, endpoint=ENDPOINT, completion_window="24h"),
    )
    assert too_many.errors and too_many.errors.data
    assert too_many.errors.data[0].code == "too_many_tasks"  # 100,000 > 50,000


def test_stats_count_the_control_plane_calls_and_reset_clears_them(
    api: FakeBatchApi, client: openai.OpenAI, url: str
) -> None:
    httpx.post(f"{url}/stats/reset")
    batch = run_out(api, client, submit(client, [request("a", "hi")]))
    lines_of(client, batch.output_file_id)
    client.batches.list(limit=1)
    stats = httpx.get(f"{url}/stats").json()
    assert stats["calls"] == {
        "files_create": 1,
        "batches_create": 1,
        "batches_retrieve": 1,
        "files_content": 1,
        "batches_list": 1,
    }
    assert stats["bytes_uploaded"] > 0 and stats["bytes_downloaded"] > 0
    mine = stats["batches"][batch.id]
    assert (mine["status"], mine["requests"]) == ("completed", 1) and mine["ended_at"]
    assert api.stats()["calls"] == stats["calls"]
    assert httpx.post(f"{url}/stats/reset").json()["calls"] == {}
