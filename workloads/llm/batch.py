"""Batch mode: a chunk's items answered through the provider's Batch API, at its discount.

Each chunk is one provider batch. A run of the chunk is one short step of its batch's life, and
between steps nothing is held: the run raises WaitFor and its adapter starts the next run
later (locally after an Inngest durable sleep, in the cloud as a delayed SQS message).

- **Submit**: the chunk's unanswered items are written as a JSONL file (`custom_id` = the
  item's index in the job's input; the same request body as realtime), streamed to a temporary
  file, uploaded (purpose `batch`) and submitted (`completion_window` 24h). The batch is
  created once: a run first claims the submission on the chunk's row (a conditional write),
  then records the batch's id there. A run that died between creating the batch and recording
  its id is found out by its claim's age, and its batch by its metadata in the provider's list.
- **Poll**: each run reads the batch once, records its request counts (the job's progress) and
  waits again, longer each time (LLM_BATCH_POLL_MIN_S x 1.5^n, at most LLM_BATCH_POLL_MAX_S).
  A provider that does not answer a poll is waited out the same way: the batch is paid for.
- **Record**: an ended batch's output file is streamed line by line into the same item results
  as realtime's (first one wins: a redelivery records nothing twice), and its error file into
  those items' failures with the provider's reason; RECORD_AT_ONCE results a write, each
  run within its time, the next going on from the line the last one reached. Requests it did
  not finish (the batch, or the request, `batch_expired`) are sent again in a new batch, only
  those, at most LLM_BATCH_MAX_RESUBMITS times; then they are those items' failures. So are
  answers that missed the job's response_format the first time (kept in files of misses until
  their second answer, which adds the first one's tokens): asked once more, never twice.
- **Refusals**: a batch that fails validation fails the chunk with the provider's message,
  except for the provider's queue limit (`token_limit_exceeded`): that batch is sent again
  later, not a failure.
- **Cancel**: a cancelled job's chunk cancels its batch, waits for it to end and records what
  had come back (`wind_down`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import cached_property
from typing import IO, Any, Final

import openai
from openai.types import Batch
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from chunking.errors import PermanentError, RateLimitedError, TransientError
from chunking.settings import get_settings
from chunking.status import ItemResult, JobRecord
from chunking.store import JobStore
from chunking.workload import StopJob, WaitFor
from workloads.llm import blobs
from workloads.llm.client import LlmClient, completion_of, mapped
from workloads.llm.fields import LlmFields
from workloads.llm.input import Item
from workloads.llm.spend import Spend
from workloads.llm.structured import ResponseFormat, checked

ENDPOINT: Final = "/v1/chat/completions"
LIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
# A run that claimed the submission this long ago and recorded no batch has died (an upload
# and a create take seconds): the next run looks for its batch, and submits if there is none.
CLAIM_TTL_S = 900.0
# The provider's codes for a request it did not get to (sent again in a new batch).
UNFINISHED_CODES = frozenset({"batch_expired", "batch_cancelled"})
QUEUE_LIMIT_CODE = "token_limit_exceeded"
LIST_PAGES_MAX = 10  # of 100 batches, looked through for a dead run's batch
RECORD_AT_ONCE = 100  # results written to the store at once (one write) from a result file


class _Moved(Exception):
    """Another delivery of the chunk wrote its batch state first: read it again, go on."""


class BatchState(BaseModel):
    """A chunk's batch, on its row (JSON): what every run of the chunk starts from."""

    round: int = 1  # 1, then one more per resubmission of what the provider left unfinished
    id: str | None = None  # the provider's batch, once created
    input_file: str | None = None
    status: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    counted: int = 0  # of this batch's finished requests, those added to the job's batch_done
    recorded: bool = False  # its result files are in the store
    files_done: list[str] = []  # of those, the ones recorded whole
    recording: str | None = None  # a file a run ran out of time recording, and its lines
    lines_done: int = 0  # recorded so far (the next run goes on from there)
    resubmitted: int = 0
    # Files of answers that missed the job's response_format, to ask once more in the next
    # round (`misses_uri`): in files, not here, so the row stays small however many missed.
    misses: list[str] = []
    requeued: int = 0
    polls: int = 0
    claim: str | None = None  # a run submitting now
    claimed_at: float | None = None
    first_submitted_at: float | None = None
    cancel_sent: bool = False
    error: str | None = None


class _Row:
    """The chunk's batch state and the version its next conditional write names."""

    def __init__(self, store: JobStore, job_id: str, chunk_index: int) -> None:
        self.store, self.job_id, self.chunk_index = store, job_id, chunk_index
        raw, self.version = store.chunk_batch(job_id, chunk_index)
        self.state = BatchState.model_validate(raw) if raw else BatchState()

    async def put(self, **changes: Any) -> bool:
        """Write the state with `changes`, if nobody wrote since it was read."""
        state = self.state.model_copy(update=changes)
        if not await asyncio.to_thread(
            self.store.put_chunk_batch,
            self.job_id,
            self.chunk_index,
            state.model_dump(exclude_defaults=True),
            self.version,
        ):
            return False
        self.state, self.version = state, self.version + 1
        return True


def poll_wait_s(polls: int) -> float:
    settings = get_settings()
    wait = settings.llm_batch_poll_min_s * 1.5**polls
    return float(min(max(wait, settings.llm_batch_poll_min_s), settings.llm_batch_poll_max_s))


def request_line(
    item: Item, model: str, max_tokens: int | None, response_format: ResponseFormat | None = None
) -> str:
    """The item's request as a batch input line: the body realtime would send."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": item.prompt}]}
    if max_tokens:
        body["max_tokens"] = max_tokens
    if response_format is not None:
        body["response_format"] = response_format.request()
    line = {"custom_id": str(item.index), "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def write_requests(
    items: list[Item],
    model: str,
    max_tokens: int | None,
    out: IO[bytes],
    response_format: ResponseFormat | None = None,
) -> int:
    """Write the items' requests to `out`, a line at a time; the bytes written.
    PermanentError past the provider's file size (LLM_BATCH_MAX_FILE_BYTES)."""
    most, written = get_settings().llm_batch_max_file_bytes, 0
    for item in items:
        data = (request_line(item, model, max_tokens, response_format) + "\n").encode()
        written += len(data)
        if written > most:
            raise PermanentError(
                f"this chunk's batch file would pass the provider's {most} bytes: "
                "use a smaller chunk_size"
            )
        out.write(data)
    return written


class BatchApi:
    """The provider's files and batches, through the openai SDK, its errors as the core's."""

    def __init__(self, client: LlmClient) -> None:
        self.sdk = client.client

    @asynccontextmanager
    async def _calling(self) -> AsyncIterator[None]:
        try:
            yield
        except openai.OpenAIError as err:
            raise mapped(err) from err

    async def submit(self, path: str, metadata: dict[str, str]) -> Batch:
        async with self._calling():
            with open(path, "rb") as data:  # noqa: ASYNC230 - streamed by httpx, never read whole
                uploaded = await self.sdk.files.create(
                    file=(os.path.basename(path), data), purpose="batch"
                )
            return await self.sdk.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata=metadata,
            )

    async def retrieve(self, batch_id: str) -> Batch:
        async with self._calling():
            return await self.sdk.batches.retrieve(batch_id)

    async def cancel(self, batch_id: str) -> None:
        async with self._calling():
            try:
                await self.sdk.batches.cancel(batch_id)
            except openai.ConflictError:
                pass  # it ended meanwhile: nothing to cancel
            except openai.BadRequestError as err:
                if "cancel" not in str(err).lower():
                    raise

    async def find(self, metadata: dict[str, str], since: float) -> Batch | None:
        """A batch created since `since` with this metadata (a dead run's), newest first."""
        async with self._calling():
            page = await self.sdk.batches.list(limit=100)
            for _ in range(LIST_PAGES_MAX):
                for batch in page.data:
                    if batch.created_at < since - 60:
                        return None
                    found = batch.metadata or {}
                    if all(found.get(k) == v for k, v in metadata.items()):
                        return batch
                if not page.has_next_page():
                    return None
                page = await page.get_next_page()
        return None

    async def lines(self, file_id: str) -> AsyncIterator[str]:
        async with (
            self._calling(),
            self.sdk.files.with_streaming_response.content(file_id) as response,
        ):
            async for line in response.iter_lines():
                if line.strip():
                    yield line

    async def delete(self, file_id: str) -> None:
        # Only tidying: the provider deletes batch files after 30 days anyway.
        with contextlib.suppress(openai.OpenAIError):
            await self.sdk.files.delete(file_id)


def _reason(response: dict[str, Any] | None, error: dict[str, Any] | None) -> tuple[str, bool]:
    """Why a request failed, and whether it is worth sending again (not finished, or the
    provider's own failure) rather than the item's failure."""
    if response is not None:
        status = int(response.get("status_code") or 0)
        body = response.get("body") or {}
        err = body.get("error") or {}
        code = err.get("code") or err.get("type") or ""
        message = err.get("message") or json.dumps(body)[:300]
        return f"{status}{' ' + code if code else ''}: {message}", status == 429 or status >= 500
    error = error or {}
    code = str(error.get("code") or "")
    return f"{code or 'error'}: {error.get('message') or 'no reason given'}", code in (
        UNFINISHED_CODES
    )


def result_of(line: str, items: dict[int, Item]) -> ItemResult | None:
    """A result file's line as its item's result; None for a line of no item of this chunk,
    or a request worth sending again (unfinished, or the provider's own failure): an item
    with no result is what a resubmission sends."""
    try:
        data = json.loads(line)
        index = int(data["custom_id"])
    except (ValueError, KeyError, TypeError):
        return None
    item = items.get(index)
    if item is None:
        return None
    response, error = data.get("response"), data.get("error")
    if response is not None and response.get("status_code") == 200:
        try:
            answer = completion_of(ChatCompletion.model_validate(response.get("body")), None)
        except PermanentError as err:
            return ItemResult(index, -1, item.id, error=str(err))
        except (TransientError, ValidationError):
            return None
        return ItemResult(
            index,
            -1,
            item.id,
            output=answer.output,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
        )
    reason, again = _reason(response, error)
    return None if again else ItemResult(index, -1, item.id, error=reason)


def misses_uri(job_id: str, chunk_index: int, round_: int, file_id: str, first_line: int) -> str:
    """Where a run keeps the schema misses it found in a result file, from its line
    `first_line` on: a name of its own per run, so a run never rewrites another's."""
    name = f"chunk-{chunk_index:06d}-round-{round_}-{file_id}-{first_line}.jsonl"
    return blobs.join(get_settings().llm_output_uri, job_id, "misses", name)


def _miss_line(miss: ItemResult) -> str:
    fields = ("index", "id", "error", "prompt_tokens", "completion_tokens", "attempts")
    return json.dumps({name: getattr(miss, name) for name in fields}, ensure_ascii=False)


def _read_misses(uris: list[str]) -> dict[int, ItemResult]:
    """The chunk's earlier schema misses, by item index (a chunk's worth at most)."""
    misses: dict[int, ItemResult] = {}
    for uri in uris:
        for line in blobs.read_line_spans(uri):
            if line.text.strip():
                miss = ItemResult(chunk_index=-1, output=None, **json.loads(line.text))
                misses[miss.index] = miss
    return misses


class BatchChunk:
    """One run of a batch-mode chunk: the next step of its batch's life."""

    def __init__(
        self,
        store: JobStore,
        job: JobRecord,
        chunk_index: int,
        load_items: Callable[[], list[Item]],
        client: LlmClient,
        keep: Callable[[list[ItemResult]], Awaitable[list[ItemResult]]],
        deadline: float = math.inf,
        spend: Spend | None = None,
    ) -> None:
        self.deadline = deadline  # time.monotonic(): recording a big file goes on in a new run
        self.store, self.job, self.chunk_index = store, job, chunk_index
        self.load_items, self.client, self._keep = load_items, client, keep
        # A capped job's batch holds its requests' estimates from its submission until each
        # one's result is kept (or it is sent again in the next round, which holds anew).
        self.spend = spend or Spend(store, job.job_id, None, 0.0, 0.0, None)
        self.api = BatchApi(client)
        self.row: _Row

    async def load(self) -> BatchChunk:
        self.row = await asyncio.to_thread(_Row, self.store, self.job.job_id, self.chunk_index)
        return self

    @cached_property
    def items(self) -> list[Item]:
        """The chunk's items, read from the input only by a run that submits or records: a
        poll reads nothing but the chunk's row."""
        return self.load_items()

    async def keep(self, results: list[ItemResult]) -> None:
        kept = await self._keep(results)
        if self.spend.capped and kept:
            by_index = {item.index: item for item in await asyncio.to_thread(lambda: self.items)}
            await self.spend.kept(kept, by_index)

    def _held(self, items: list[Item]) -> int:
        return sum(self.spend.estimate(item.prompt) for item in items) if self.spend.capped else 0

    async def _unanswered(self) -> list[Item]:
        results = await asyncio.to_thread(
            self.store.item_results, self.job.job_id, self.chunk_index
        )
        kept = {r.index for r in results}
        items = await asyncio.to_thread(lambda: self.items)
        return [item for item in items if item.index not in kept]

    def _metadata(self) -> dict[str, str]:
        state = self.row.state
        return {
            "job_id": self.job.job_id,
            "chunk": str(self.chunk_index),
            "round": str(state.round),
            "claim": state.claim or "",
        }

    async def step(self, *, winding_down: bool = False) -> None:
        """Take the batch one step on; returns once it has ended and is recorded (the chunk
        may settle), else raises WaitFor (or the core's errors)."""
        for _ in range(6):  # a few moves in one run: record, then resubmit at once
            try:
                await self._move(winding_down)
                return
            except _Moved:  # another delivery wrote first: go on from what it wrote
                await self.load()
        raise WaitFor(get_settings().llm_batch_poll_min_s, "the batch moved on: look again")

    async def _move(self, winding_down: bool) -> None:
        while True:
            state = self.row.state
            if state.error is not None:
                # The provider refused it and the chunk failed; running again, the chunk was
                # redriven (a failed chunk never runs otherwise): its items get a new batch.
                fresh = {"error": None, "id": None, "status": None, "claim": None}
                if not await self.row.put(**fresh, round=state.round + 1, recorded=False):
                    raise _Moved
                continue
            if state.id is None:
                if winding_down or not await self._submit():
                    return
                continue
            if not state.recorded:
                await self._poll(winding_down)
                continue
            if not await self._resubmit(winding_down):
                return

    # --- submit ---

    async def _submit(self) -> bool:
        """Create the batch of the unanswered items (once); False when none is left."""
        state, now = self.row.state, time.time()
        if state.claim is not None and state.claimed_at is not None:
            if now - state.claimed_at < CLAIM_TTL_S:
                raise WaitFor(poll_wait_s(0), "another run is submitting this chunk's batch")
            # Its run died: did it create the batch before it did?
            found = await self.api.find(self._metadata(), state.claimed_at)
            if found is not None:
                await self._adopt(found)
                raise WaitFor(poll_wait_s(0), f"batch {found.id} submitted")
        todo = await self._unanswered()
        if not todo:
            return False
        claim = uuid.uuid4().hex
        if not await self.row.put(claim=claim, claimed_at=now):
            raise _Moved
        held = self._held(todo)
        try:
            await self.spend.hold(held)
        except StopJob:
            await self.row.put(claim=None, claimed_at=None)
            raise
        with tempfile.NamedTemporaryFile(
            "wb", prefix=f"batch-{self.job.job_id}-{self.chunk_index}-", suffix=".jsonl"
        ) as out:
            client = self.client
            write_requests(todo, client.model, client.max_tokens, out, client.response_format)
            out.flush()
            try:
                batch = await self.api.submit(out.name, self._metadata())
            except PermanentError as err:
                await self.spend.release(held)
                await self.row.put(claim=None, claimed_at=None, error=f"batch refused: {err}")
                raise PermanentError(f"the provider refused the batch: {err}") from err
            except Exception:
                # Created or not (a timeout cannot tell): the retry looks for it at once, by
                # its claim, rather than after the claim's whole lifetime.
                await self.row.put(claimed_at=now - CLAIM_TTL_S)
                raise
        if not await self._adopt(batch, requests=len(todo)):
            await self.api.cancel(batch.id)  # another run took over meanwhile: not paid twice
            raise _Moved
        raise WaitFor(poll_wait_s(0), f"batch {batch.id} submitted ({len(todo)} requests)")

    async def _adopt(self, batch: Batch, requests: int | None = None) -> bool:
        state = self.row.state
        counts = batch.request_counts
        done = await self.row.put(
            id=batch.id,
            input_file=batch.input_file_id,
            status=batch.status,
            total=counts.total if counts else 0,
            completed=0,
            failed=0,
            counted=0,
            recorded=False,
            files_done=[],
            recording=None,
            lines_done=0,
            polls=0,
            claim=None,
            claimed_at=None,
            first_submitted_at=state.first_submitted_at or time.time(),
        )
        if done:
            sent = requests if requests is not None else (counts.total if counts else 0)
            await self._count({"batches": 1, "batch_requests": sent})
        return done

    # --- poll ---

    async def _poll(self, winding_down: bool) -> None:
        state = self.row.state
        assert state.id is not None
        if winding_down and not state.cancel_sent and state.status in LIVE:
            await self.api.cancel(state.id)
            await self.row.put(cancel_sent=True)
        try:
            batch = await self.api.retrieve(state.id)
        except PermanentError:
            raise
        except TransientError as err:  # the batch is paid for: wait the provider out
            wait = err.retry_after_s if isinstance(err, RateLimitedError) else None
            await self._give_up_if_too_long()
            await self.row.put(polls=state.polls + 1)
            raise WaitFor(wait or poll_wait_s(state.polls), f"polling failed: {err}") from err
        counts = batch.request_counts
        done = (counts.completed + counts.failed) if counts else 0
        changes: dict[str, Any] = {
            "status": batch.status,
            "total": counts.total if counts else state.total,
            "completed": counts.completed if counts else 0,
            "failed": counts.failed if counts else 0,
            "counted": max(done, state.counted),
            "polls": state.polls + 1,
        }
        if batch.status in LIVE:
            await self._give_up_if_too_long()
            if await self.row.put(**changes):
                await self._count({"batch_done": done - state.counted})
            raise WaitFor(poll_wait_s(state.polls), f"batch {batch.id} {batch.status}")
        if batch.status == "failed":
            await self._refused(batch, changes)
            return
        # Ended: completed, expired or cancelled. Record its files (each run within its time,
        # going on where the last one stopped), then mark it recorded.
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id and file_id not in self.row.state.files_done:
                await self._record(file_id)
                files_done = [*self.row.state.files_done, file_id]
                if not await self.row.put(files_done=files_done, recording=None, lines_done=0):
                    raise _Moved
        if await self.row.put(**changes, recorded=True):
            await self._count({"batch_done": done - state.counted})
            await self.api.delete(state.input_file or "")
        else:
            raise _Moved

    async def _count(self, counts: dict[str, int]) -> None:
        positive = {name: n for name, n in counts.items() if n > 0}
        if positive:
            await asyncio.to_thread(self.store.add_batch_counts, self.job.job_id, positive)

    async def _give_up_if_too_long(self) -> None:
        """A batch the provider has not ended in LLM_BATCH_GIVE_UP_S is cancelled, and fails
        the chunk (what it had answered is not collected: the provider broke its window)."""
        state = self.row.state
        first = state.first_submitted_at
        most = get_settings().llm_batch_give_up_s
        if first is not None and time.time() - first > most:
            if state.id is not None:
                with contextlib.suppress(TransientError):
                    await self.api.cancel(state.id)
            raise PermanentError(f"the provider has not ended this chunk's batch in {most:g} s")

    async def _refused(self, batch: Batch, changes: dict[str, Any]) -> None:
        """The provider refused the batch when it validated it: its queue is full (send it
        again later), or the file is invalid (the chunk fails with the provider's message)."""
        errors = (batch.errors.data if batch.errors else None) or []
        if any(e.code == QUEUE_LIMIT_CODE for e in errors):
            state = self.row.state
            if await self.row.put(id=None, status=None, requeued=state.requeued + 1, polls=0):
                await self._count({"batch_requeued": 1})
                await self.api.delete(state.input_file or "")
            message = next(e.message for e in errors if e.code == QUEUE_LIMIT_CODE)
            raise WaitFor(get_settings().llm_batch_poll_max_s, f"queue limit: {message}")
        reason = "; ".join(
            f"{e.code or 'error'}{f' (line {e.line})' if e.line else ''}: {e.message}"
            for e in errors[:5]
        )
        reason = f"the provider refused batch {batch.id}: {reason or 'no reason given'}"
        await self.row.put(**changes, error=reason)
        raise PermanentError(reason)

    async def _record(self, file_id: str) -> None:
        """A result file, streamed into the items' results (each kept once), RECORD_AT_ONCE
        results a write. When another write would pass the run's deadline, the lines recorded
        so far are written down and the rest goes on in a new run (WaitFor(0)), which skips
        them: a file of 50,000 results never needs one run to write them all."""
        state = self.row.state
        start = state.lines_done if state.recording == file_id else 0
        by_index = {item.index: item for item in await asyncio.to_thread(lambda: self.items)}
        response_format = self.client.response_format
        earlier = await asyncio.to_thread(_read_misses, state.misses)
        results: list[ItemResult] = []
        misses: list[ItemResult] = []
        read = 0
        async for line in self.api.lines(file_id):
            read += 1
            if read <= start:
                continue
            result = result_of(line, by_index)
            if result is not None:
                result, again = checked(result, response_format, earlier.get(result.index))
                (misses if again else results).append(result)
            if len(results) >= RECORD_AT_ONCE:
                began = time.monotonic()
                await self.keep(results)
                results = []
                if 2 * time.monotonic() - began > self.deadline:  # no time for another round
                    kept = await self._keep_misses(misses, file_id, start)
                    if not await self.row.put(recording=file_id, lines_done=read, misses=kept):
                        raise _Moved
                    raise WaitFor(0, f"recording {file_id}: {read} lines so far, the rest next")
        await self.keep(results)
        if misses and not await self.row.put(
            misses=await self._keep_misses(misses, file_id, start)
        ):
            raise _Moved

    async def _keep_misses(self, misses: list[ItemResult], file_id: str, start: int) -> list[str]:
        """Write this run's schema misses to their file (none: no file); the chunk's files of
        misses with it, for its row."""
        known = self.row.state.misses
        if not misses:
            return known
        state = self.row.state
        uri = misses_uri(self.job.job_id, self.chunk_index, state.round, file_id, start)
        await asyncio.to_thread(blobs.write_lines, uri, (_miss_line(m) for m in misses))
        return known if uri in known else [*known, uri]

    # --- resubmit ---

    async def _resubmit(self, winding_down: bool) -> bool:
        """Send what the ended batch left unfinished in a new one; False when nothing is left
        or it may not be (cancelled, or resubmitted often enough: those items fail)."""
        state = self.row.state
        todo = await self._unanswered()
        if not todo:
            return False
        most = get_settings().llm_batch_max_resubmits
        if winding_down or state.status == "cancelled" or state.round > most:
            if not winding_down:
                why = (
                    f"not answered: the provider did not finish it in {state.round} "
                    f"batches (batch {state.id} {state.status})"
                )
                # An answer that missed the schema, with no round left to ask again, fails so.
                missed = await asyncio.to_thread(_read_misses, state.misses)
                await self.keep(
                    [missed.get(item.index, ItemResult(item.index, -1, item.id, error=why))
                     for item in todo]
                )  # fmt: skip
            return False
        if await self.row.put(
            round=state.round + 1,
            id=None,
            status=None,
            recorded=False,
            files_done=[],
            recording=None,
            lines_done=0,
            resubmitted=state.resubmitted + len(todo),
            polls=0,
        ):
            await self._count({"batch_resubmitted": len(todo)})
            await self.spend.release(self._held(todo))  # the next round holds them again
        return True


STOP_CONCURRENCY = 16  # provider cancels at once, when a cancelled job had many batches


async def cancel_batches(store: JobStore, job: JobRecord, chunks: list[int]) -> int:
    """Cancel the provider batches of these chunks of a cancelled job that are still under
    way, at once (each chunk's next run then keeps what came back); how many were cancelled."""
    fields = LlmFields.of(job.spec)
    client = await asyncio.to_thread(LlmClient.from_settings, fields.model, fields.max_tokens)
    gate = asyncio.Semaphore(STOP_CONCURRENCY)

    async def cancel(index: int) -> bool:
        async with gate:
            row = await asyncio.to_thread(_Row, store, job.job_id, index)
            state = row.state
            if state.id is None or state.cancel_sent or state.status not in LIVE:
                return False
            await BatchApi(client).cancel(state.id)
            await row.put(cancel_sent=True)  # lost to the chunk's own run: it sent one too
            return True

    async with client:
        return sum(await asyncio.gather(*(cancel(index) for index in chunks)))
