"""A local stand-in for OpenAI's Files and Batch API, for tests and benchmarks (no provider here).

`FakeBatchApi(app, answer=...)` adds to a FastAPI app the routes the openai SDK calls for
`client.files.*` and `client.batches.*`, answering with the provider's JSON shapes (those of
`openai.types.Batch`, `FileObject`, `FileDeleted`) and error JSON. `FakeModelServer` mounts it
beside its chat completions, so one base URL serves both, and a request sent in a batch gets
the very body the realtime endpoint would answer it (`answer`, shared).

A batch's life is a function of its clock (`Clock.advance` moves it without sleeping):
`validating` for `validating_s`, then `in_progress` for `turnaround_s` (its requests finishing
at an even pace, in input order), `finalizing` for `finalizing_s`, then `completed` with an
output file (answers with status 200) and an error file (the other answers; `null` when none).
Lines of both are written in reverse input order, as the provider does not keep order either.
Validation fails the batch (`errors`, no files) for any bad line, a file of more than
`max_requests_per_batch` lines, or tokens (prompt chars / 4 + max_tokens) that would take the
model's enqueued batches (in progress, or sent earlier) over `enqueued_token_limit`. An unknown
`input_file_id` is not refused at create either: the batch fails validation (`invalid_request`),
as the provider's does.

Markers in a request's last message, besides the model's own (`[400-context]`, `[401]`,
`[refuse]`: the same answers as realtime): `[expire]` is never finished, so its batch ends
`expired` after its turnaround and the request goes to the error file as `batch_expired`;
`[expirex1]` expires only in the first batch submitting that prompt. The realtime transport
markers (`[429]`, `[500]`, `[429x2]`, `[hang]`, `[slow]`) mean nothing here: answered normally.

`cancel` turns a validating or in_progress batch `cancelling`, then after `cancel_s` `cancelled`:
the requests finished by the cancel in the output/error files, each of the rest in the error
file as `batch_cancelled` (the provider's spec lists that code for such lines).

Uploads are streamed to files in `storage_dir` (a temporary directory by default), never held
whole in memory: benchmarks upload files of 100k lines. `stats()` (and `GET /stats`) counts the
control-plane calls by kind, the bytes up and down, and each batch's status and times.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

# The model's answer to one request body the n-th time its prompt is asked: (HTTP status, JSON
# body), as the realtime endpoint answers it.
Answer = Callable[[dict[str, Any], int], tuple[int, dict[str, Any]]]

ENDPOINT = "/v1/chat/completions"  # the only one this stand-in can answer
WINDOW_S = 24 * 3600
ORGANIZATION = "org-test"
EXPIRE = re.compile(r"\[expire(?:x(?P<times>\d+))?\]")
CHUNK = 1 << 16


class Clock:
    """Wall-clock seconds that tests can move forward without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
    return JSONResponse(body, status_code=status)


def _line_error(
    code: str, message: str, line: int | None, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _new_id(prefix: str, length: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:length]


@dataclass
class StoredFile:
    id: str
    path: Path
    filename: str
    purpose: str
    bytes: int
    created_at: int

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class BatchRequest:
    custom_id: str
    body: dict[str, Any] | None  # dropped once the batch has ended
    ok: bool  # whether the model answers it with a 200
    expires: bool


@dataclass
class BatchRecord:
    id: str
    seq: int
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created: float
    # The knobs as they were when it was created: changing them affects later batches only.
    validating_s: float
    turnaround_s: float
    finalizing_s: float
    cancel_s: float
    model: str | None = None
    requests: list[BatchRequest] = field(default_factory=list)
    line_errors: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    status: str = "validating"
    at: dict[str, float] = field(default_factory=dict)  # when each stage began
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    final_counts: tuple[int, int] | None = None  # (completed, failed) once ended
    usage: dict[str, Any] | None = None

    def next_change(self) -> float | None:
        """When its status changes next by itself, if it will."""
        after = {
            "validating": (self.created, self.validating_s),
            "in_progress": (self.at.get("in_progress", 0.0), self.turnaround_s),
            "finalizing": (self.at.get("finalizing", 0.0), self.finalizing_s),
            "cancelling": (self.at.get("cancelling", 0.0), self.cancel_s),
        }
        if self.status not in after:
            return None
        start, duration = after[self.status]
        return start + duration

    def finished_by(self, when: float) -> list[BatchRequest]:
        """The requests answered by then: the ones that can be, at an even pace in input order."""
        if "in_progress" not in self.at:
            return []
        doable = [r for r in self.requests if not r.expires]
        share = (when - self.at["in_progress"]) / self.turnaround_s if self.turnaround_s else 1
        return doable[: int(len(doable) * min(max(share, 0.0), 1.0))]

    def counts(self, now: float) -> dict[str, int]:
        if self.final_counts is not None:
            completed, failed = self.final_counts
            return {"total": completed + failed, "completed": completed, "failed": failed}
        if self.status in ("validating", "failed") or "in_progress" not in self.at:
            return {"total": 0, "completed": 0, "failed": 0}
        done = self.finished_by(min(now, self.at.get("cancelling", now)))
        completed = sum(r.ok for r in done)
        return {
            "total": len(self.requests),
            "completed": completed,
            "failed": len(done) - completed,
        }


class FakeBatchApi:
    """OpenAI's `/v1/files` and `/v1/batches` routes on `app`, answering with `answer`."""

    def __init__(
        self,
        app: FastAPI,
        answer: Answer,
        *,
        turnaround_s: float = 1.0,
        validating_s: float | None = None,  # None: a tenth of the turnaround
        finalizing_s: float | None = None,  # None: a tenth of the turnaround
        cancel_s: float = 0.5,
        enqueued_token_limit: int | None = None,  # per model; None: no limit
        max_file_bytes: int = 200 * 1024 * 1024,
        max_requests_per_batch: int = 50_000,
        clock: Clock | None = None,
        storage_dir: Path | None = None,
    ) -> None:
        self.answer = answer
        self.turnaround_s, self.validating_s, self.finalizing_s = (
            turnaround_s,
            validating_s,
            finalizing_s,
        )
        self.cancel_s = cancel_s
        self.enqueued_token_limit = enqueued_token_limit
        self.max_file_bytes = max_file_bytes
        self.max_requests_per_batch = max_requests_per_batch
        self.clock = clock or Clock()
        if storage_dir is None:  # kept as an attribute: removed with this object
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-batch-api-")
            storage_dir = Path(self._tmp.name)
        self.storage_dir = storage_dir
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, BatchRecord] = {}
        self.submissions: Counter[str] = Counter()  # prompts with `[expirexN]`, per batch sent
        self.calls: Counter[str] = Counter()
        self.asked: Counter[str] = Counter()  # prompts answered in a batch (its output lines)
        self.bytes_uploaded = self.bytes_downloaded = 0
        # Handlers run in the server's threads and tests read from theirs.
        self.lock = threading.RLock()
        self._routes(app)

    # --- observability

    def stats(self) -> dict[str, Any]:
        with self.lock:
            self.settle()
            return {
                "calls": dict(self.calls),
                "bytes_uploaded": self.bytes_uploaded,
                "bytes_downloaded": self.bytes_downloaded,
                "batches": {
                    b.id: {
                        "status": b.status,
                        "requests": len(b.requests),
                        "created_at": b.created,
                        "ended_at": self._ended_at(b),
                    }
                    for b in self.batches.values()
                },
            }

    def reset_stats(self) -> None:
        with self.lock:
            self.calls.clear()
            self.bytes_uploaded = self.bytes_downloaded = 0

    def batch_json(self, batch_id: str) -> dict[str, Any]:
        """A batch as `GET /v1/batches/{id}` would answer it now."""
        with self.lock:
            self.settle()
            return self._render(self.batches[batch_id])

    @staticmethod
    def _ended_at(batch: BatchRecord) -> float | None:
        ends = [
            batch.at[s] for s in ("completed", "failed", "expired", "cancelled") if s in batch.at
        ]
        return ends[0] if ends else None

    # --- the clock's consequences

    def settle(self) -> None:
        """Apply every status change due by now, in the order they fell due: a batch's
        validation sees the others as they were then (enqueued tokens)."""
        now = self.clock.now()
        with self.lock:
            while True:
                due = [
                    (when, b.seq, b)
                    for b in self.batches.values()
                    if (when := b.next_change()) is not None and when <= now
                ]
                if not due:
                    return
                when, _, batch = min(due)
                self._change(batch, when)

    def _change(self, batch: BatchRecord, when: float) -> None:
        if batch.status == "validating":
            if errors := batch.line_errors or self._over_token_limit(batch):
                batch.status, batch.errors, batch.at["failed"] = "failed", errors, when
                batch.requests = []
            else:
                batch.status, batch.at["in_progress"] = "in_progress", when
        elif batch.status == "in_progress":
            if any(r.expires for r in batch.requests):  # never finished: out of time
                self._end(batch, "expired", when)
            else:
                batch.status, batch.at["finalizing"] = "finalizing", when
        elif batch.status == "finalizing":
            self._end(batch, "completed", when)
        elif batch.status == "cancelling":
            self._end(batch, "cancelled", when)

    def _over_token_limit(self, batch: BatchRecord) -> list[dict[str, Any]]:
        limit = self.enqueued_token_limit
        if limit is None:
            return []
        # Those queued ahead of it: still validating but sent earlier, or already admitted.
        enqueued = sum(
            b.tokens
            for b in self.batches.values()
            if b.model == batch.model
            and not b.line_errors
            and (
                b.status in ("in_progress", "finalizing")
                or (b.status == "validating" and b.seq < batch.seq)
            )
        )
        if enqueued + batch.tokens <= limit:
            return []
        message = (
            f"Enqueued token limit reached for {batch.model} in organization "
            f"{ORGANIZATION}. Limit: {limit:,} enqueued tokens. Please try again once "
            "some in_progress batches have been completed."
        )
        return [_line_error("token_limit_exceeded", message, None)]

    def _end(self, batch: BatchRecord, status: str, when: float) -> None:
        """Write its output and error files, and end it."""
        done = batch.finished_by(batch.at.get("cancelling", when))
        done_ids = {id(r) for r in done}
        ran = "in_progress" in batch.at  # not when cancelled while validating
        unfinished = [r for r in batch.requests if id(r) not in done_ids] if ran else []
        succeeded: list[str] = []
        failed: list[str] = []
        usage = {"input_tokens": 0, "output_tokens": 0}
        for request in done:
            assert request.body is not None
            prompt = request.body["messages"][-1]["content"]
            self.asked[prompt] += 1
            code, body = self.answer(request.body, self.asked[prompt])
            line = {
                "id": _new_id("batch_req_"),
                "custom_id": request.custom_id,
                "response": {"status_code": code, "request_id": uuid.uuid4().hex, "body": body},
                "error": None,
            }
            (succeeded if code == 200 else failed).append(json.dumps(line))
            usage["input_tokens"] += body.get("usage", {}).get("prompt_tokens", 0)
            usage["output_tokens"] += body.get("usage", {}).get("completion_tokens", 0)
        if status == "cancelled":
            why = (
                "batch_cancelled",
                "This request could not be executed before the batch was cancelled.",
            )
        else:
            why = (
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            )
        for request in unfinished:
            failed.append(
                json.dumps(
                    {
                        "id": _new_id("batch_req_"),
                        "custom_id": request.custom_id,
                        "response": None,
                        "error": {"code": why[0], "message": why[1]},
                    }
                )
            )
        name = batch.id
        batch.output_file_id = self._write(f"{name}_output.jsonl", succeeded[::-1], when)
        batch.error_file_id = self._write(f"{name}_error.jsonl", failed[::-1], when)
        batch.final_counts = (len(succeeded), len(failed))
        total = usage["input_tokens"] + usage["output_tokens"]
        batch.usage = {
            **usage,
            "total_tokens": total,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        batch.status, batch.at[status] = status, when
        for request in batch.requests:
            request.body = None  # the answers are on disk now

    def _write(self, filename: str, lines: list[str], when: float) -> str | None:
        if not lines:
            return None
        file_id = _new_id("file-", 22)
        path = self.storage_dir / file_id
        with path.open("w") as out:
            for line in lines:
                out.write(line + "\n")
        self.files[file_id] = StoredFile(
            file_id, path, filename, "batch_output", path.stat().st_size, int(when)
        )
        return file_id

    # --- reading an input file

    def _load(self, batch: BatchRecord) -> None:
        """Read and check its input file, as the provider does while validating (the outcome
        shows when validation ends)."""
        stored = self.files.get(batch.input_file_id)
        if stored is None:
            message = (
                f"Cannot find file {batch.input_file_id}, or organization "
                f"{ORGANIZATION} does not have access to it."
            )
            batch.line_errors = [_line_error("invalid_request", message, None, "file_id")]
            return
        with stored.path.open("rb") as counting:
            lines = sum(1 for raw in counting if raw.strip())
        if lines == 0:
            batch.line_errors = [
                _line_error(
                    "empty_file",
                    "The input file is empty. Please ensure that your batch contains "
                    "at least one request.",
                    None,
                    "input_file_id",
                )
            ]
            return
        if lines > self.max_requests_per_batch:
            message = (
                f"The batch input file has {lines:,} requests, more than the maximum "
                f"of {self.max_requests_per_batch:,} per batch."
            )
            batch.line_errors = [_line_error("too_many_tasks", message, None, "input_file_id")]
            return
        seen: set[str] = set()
        with stored.path.open("rb") as reading:
            for number, raw in enumerate(reading, start=1):
                if raw.strip():
                    self._load_line(batch, number, raw, seen)
        if batch.line_errors:
            batch.requests = []

    def _load_line(self, batch: BatchRecord, number: int, raw: bytes, seen: set[str]) -> None:
        errors = batch.line_errors
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            errors.append(
                _line_error(
                    "invalid_json_line", "This line is not parseable as valid JSON.", number
                )
            )
            return
        missing = [key for key in ("custom_id", "method", "url", "body") if key not in line]
        for key in missing:
            errors.append(
                _line_error(
                    "missing_required_parameter",
                    f"Missing required parameter: '{key}'.",
                    number,
                    key,
                )
            )
        if missing:
            return
        body, custom_id = line["body"], str(line["custom_id"])
        if line["url"] != batch.endpoint:
            errors.append(
                _line_error(
                    "invalid_url",
                    "The URL provided for this request does not match the batch endpoint.",
                    number,
                    "url",
                )
            )
            return
        if not isinstance(body, dict):
            errors.append(
                _line_error("invalid_request", "Body must be a JSON object.", number, "body")
            )
            return
        if body.get("stream"):
            errors.append(
                _line_error(
                    "streaming_unsupported",
                    "Chat Completions: Streaming is not supported in the Batch API.",
                    number,
                    "body.stream",
                )
            )
        for key in ("model", "messages"):
            if key not in body:
                errors.append(
                    _line_error(
                        "invalid_request",
                        f"{key.capitalize()} parameter is required.",
                        number,
                        f"body.{key}",
                    )
                )
        if custom_id in seen:
            errors.append(
                _line_error(
                    "duplicate_custom_id",
                    "The custom_id for this request is a duplicate of "
                    "another request. The custom_id parameter must be unique for each request in a "
                    "batch.",
                    number,
                    "custom_id",
                )
            )
        seen.add(custom_id)
        if "model" in body:
            if batch.model is None:
                batch.model = body["model"]
            elif body["model"] != batch.model:
                errors.append(
                    _line_error(
                        "mismatched_model",
                        "The provided model does not match the model of the "
                        "other requests in this batch; a batch must use one model.",
                        number,
                        "body.model",
                    )
                )
        if errors or "messages" not in body:
            return  # the batch will fail: no need to answer anything
        prompt = str(body["messages"][-1].get("content", "")) if body["messages"] else ""
        chars = sum(len(str(m.get("content", ""))) for m in body["messages"])
        batch.tokens += chars // 4 + int(
            body.get("max_tokens") or body.get("max_completion_tokens") or 0
        )
        expires = False
        if marker := EXPIRE.search(prompt):
            self.submissions[prompt] += 1
            times = marker["times"]
            expires = times is None or self.submissions[prompt] <= int(times)
        status, _ = self.answer(body, self.asked[prompt] + 1)
        batch.requests.append(BatchRequest(custom_id, body, status == 200, expires))

    # --- JSON

    def _render(self, batch: BatchRecord) -> dict[str, Any]:
        def at(stage: str) -> int | None:
            return int(batch.at[stage]) if stage in batch.at else None

        ended = batch.status in ("completed", "expired", "cancelled")
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created),
            "in_progress_at": at("in_progress"),
            "expires_at": int(batch.created) + WINDOW_S,
            "finalizing_at": at("finalizing"),
            "completed_at": at("completed"),
            "failed_at": at("failed"),
            "expired_at": at("expired"),
            "cancelling_at": at("cancelling"),
            "cancelled_at": at("cancelled"),
            "request_counts": batch.counts(self.clock.now()),
            "usage": batch.usage if ended else None,
            "metadata": batch.metadata,
        }

    # --- routes

    def _routes(self, app: FastAPI) -> None:
        @app.post("/v1/files")
        async def files_create(request: Request) -> Any:
            with self.lock:
                self.calls["files_create"] += 1
            file_id = _new_id("file-", 22)
            path = self.storage_dir / file_id
            try:
                fields, filename, size = await _receive_upload(request, path, self.max_file_bytes)
            except _TooLarge as refused:
                path.unlink(missing_ok=True)
                with self.lock:
                    self.bytes_uploaded += refused.size
                return _error(
                    400,
                    f"File is too large ({refused.size:,} bytes): the maximum "
                    f"is {self.max_file_bytes:,} bytes.",
                    "file",
                    "file_too_large",
                )
            except ValueError as bad:
                path.unlink(missing_ok=True)
                return _error(400, str(bad))
            with self.lock:
                self.bytes_uploaded += size
            if filename is None:
                path.unlink(missing_ok=True)
                return _error(
                    400, "Missing required parameter: 'file'.", "file", "missing_required_parameter"
                )
            purpose = fields.get("purpose")
            if purpose != "batch":  # the only purpose this stand-in has a use for
                path.unlink(missing_ok=True)
                return _error(
                    400,
                    f"Invalid value: '{purpose}'. Supported values are: 'batch'.",
                    "purpose",
                    "invalid_value",
                )
            stored = StoredFile(file_id, path, filename, purpose, size, int(self.clock.now()))
            with self.lock:
                self.files[file_id] = stored
            return stored.json()

        @app.get("/v1/files/{file_id}")
        def files_retrieve(file_id: str) -> Any:
            with self.lock:
                self.calls["files_retrieve"] += 1
                self.settle()
                stored = self.files.get(file_id)
                return stored.json() if stored else _no_file(file_id)

        @app.get("/v1/files/{file_id}/content")
        def files_content(file_id: str) -> Any:
            with self.lock:
                self.calls["files_content"] += 1
                self.settle()
                stored = self.files.get(file_id)
                if stored is None:
                    return _no_file(file_id)
                self.bytes_downloaded += stored.bytes
            return FileResponse(stored.path, media_type="application/octet-stream")

        @app.delete("/v1/files/{file_id}")
        def files_delete(file_id: str) -> Any:
            with self.lock:
                self.calls["files_delete"] += 1
                stored = self.files.pop(file_id, None)
                if stored is None:
                    return _no_file(file_id)
                stored.path.unlink(missing_ok=True)
                return {"id": file_id, "object": "file", "deleted": True}

        @app.post("/v1/batches")
        async def batches_create(request: Request) -> Any:
            with self.lock:
                self.calls["batches_create"] += 1
            asked = await request.json()
            for key in ("input_file_id", "endpoint", "completion_window"):
                if key not in asked:
                    return _error(
                        400,
                        f"Missing required parameter: '{key}'.",
                        key,
                        "missing_required_parameter",
                    )
            if asked["endpoint"] != ENDPOINT:
                return _error(
                    400,
                    f"Invalid value: '{asked['endpoint']}'. Supported values are: '{ENDPOINT}'.",
                    "endpoint",
                    "invalid_value",
                )
            if asked["completion_window"] != "24h":
                return _error(
                    400,
                    f"Invalid value: '{asked['completion_window']}'. Supported values are: '24h'.",
                    "completion_window",
                    "invalid_value",
                )
            metadata = asked.get("metadata")
            if metadata is not None and not (
                isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
            ):
                return _error(
                    400,
                    "Invalid type for 'metadata': expected an object of strings.",
                    "metadata",
                    "invalid_type",
                )
            # Reading a file of 50k lines takes a while: not on the loop realtime calls need.
            return await asyncio.to_thread(
                self._create, asked["input_file_id"], asked["endpoint"], metadata
            )

        @app.get("/v1/batches/{batch_id}")
        def batches_retrieve(batch_id: str) -> Any:
            with self.lock:
                self.calls["batches_retrieve"] += 1
                self.settle()
                batch = self.batches.get(batch_id)
                return self._render(batch) if batch else _no_batch(batch_id)

        @app.post("/v1/batches/{batch_id}/cancel")
        def batches_cancel(batch_id: str) -> Any:
            with self.lock:
                self.calls["batches_cancel"] += 1
                self.settle()
                batch = self.batches.get(batch_id)
                if batch is None:
                    return _no_batch(batch_id)
                if batch.status in ("validating", "in_progress"):
                    batch.status, batch.at["cancelling"] = "cancelling", self.clock.now()
                elif batch.status not in ("cancelling", "cancelled"):  # those: as they are
                    return _error(409, f"Cannot cancel a batch with status '{batch.status}'.")
                return self._render(batch)

        @app.get("/v1/batches")
        def batches_list(limit: int = 20, after: str | None = None) -> Any:
            with self.lock:
                self.calls["batches_list"] += 1
                self.settle()
                newest_first = sorted(self.batches.values(), key=lambda b: -b.seq)
                if after is not None:
                    if after not in self.batches:
                        return _no_batch(after)
                    newest_first = [b for b in newest_first if b.seq < self.batches[after].seq]
                page = newest_first[: max(1, min(limit, 100))]
                data = [self._render(b) for b in page]
                return {
                    "object": "list",
                    "data": data,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                    "has_more": len(newest_first) > len(page),
                }

        @app.get("/stats")
        def stats() -> Any:
            return self.stats()

        @app.post("/stats/reset")
        def stats_reset() -> Any:
            self.reset_stats()
            return self.stats()

    def _create(self, input_file_id: str, endpoint: str, metadata: dict[str, str] | None) -> Any:
        with self.lock:
            self.settle()
            turnaround = self.turnaround_s
            batch = BatchRecord(
                id=_new_id("batch_"),
                seq=len(self.batches),
                input_file_id=input_file_id,
                endpoint=endpoint,
                metadata=metadata,
                created=self.clock.now(),
                validating_s=turnaround / 10 if self.validating_s is None else self.validating_s,
                turnaround_s=turnaround,
                finalizing_s=turnaround / 10 if self.finalizing_s is None else self.finalizing_s,
                cancel_s=self.cancel_s,
            )
            self._load(batch)
            self.batches[batch.id] = batch
            return self._render(batch)


def _no_file(file_id: str) -> JSONResponse:
    return _error(404, f"No such File object: {file_id}", "id")


def _no_batch(batch_id: str) -> JSONResponse:
    return _error(404, f"No batch found with id '{batch_id}'.")


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


async def _receive_upload(
    request: Request, path: Path, max_bytes: int
) -> tuple[dict[str, str], str | None, int]:
    """Stream a multipart/form-data body: its `file` part into `path`, chunk by chunk, and the
    other (small) fields into a dict. Returns (fields, the file's name, its size); raises
    `_TooLarge` past `max_bytes`, after reading the rest of the body (so the client gets the
    answer rather than a broken pipe)."""
    kind = request.headers.get("content-type", "")
    boundary = re.search(r'boundary="?([^";]+)"?', kind)
    if not kind.startswith("multipart/form-data") or not boundary:
        raise ValueError("Expected a multipart/form-data body.")
    delimiter = b"\r\n--" + boundary[1].encode()
    buffer = b"\r\n"  # so that the first delimiter looks like the others
    fields: dict[str, str] = {}
    filename: str | None = None
    size, too_large = 0, False
    name: str | None = None  # the part being read; None: between parts
    value = b""
    with path.open("wb") as out:

        def take(data: bytes) -> None:
            nonlocal size, too_large, value
            if name != "file":
                value += data[: 4096 - len(value)]  # fields are short: cap what is kept
            elif not too_large:
                size += len(data)
                too_large = size > max_bytes
                if not too_large:
                    out.write(data)
            else:
                size += len(data)

        async for chunk in request.stream():
            buffer += chunk
            while True:
                if name is None:  # looking for the next part's headers
                    start = buffer.find(delimiter)
                    head_end = buffer.find(b"\r\n\r\n", start + len(delimiter))
                    if start < 0 or head_end < 0:
                        break
                    headers = buffer[start + len(delimiter) : head_end].decode("utf-8", "replace")
                    buffer = buffer[head_end + 4 :]
                    disposition = re.search(r'name="([^"]*)"', headers)
                    name = disposition[1] if disposition else ""
                    if name == "file":
                        given = re.search(r'filename="([^"]*)"', headers)
                        filename = given[1] if given else "upload"
                    value = b""
                    continue
                end = buffer.find(delimiter)
                if end < 0:  # keep what could be the start of a delimiter
                    keep = len(delimiter) - 1
                    if len(buffer) > keep:
                        take(buffer[:-keep])
                        buffer = buffer[-keep:]
                    break
                take(buffer[:end])
                if name != "file":
                    fields[name] = value.decode("utf-8", "replace")
                buffer, name = buffer[end:], None
    if too_large:
        raise _TooLarge(size)
    return fields, filename, size
