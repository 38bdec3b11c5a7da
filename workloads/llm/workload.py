"""The llm workload (`Llm`), and its chunk: ask the model about its items, LLM_ITEM_CONCURRENCY
at a time, keeping every answer as it arrives.

- Requests take their turn in the model's shared budget (workloads.llm.ratelimit): every
  process of a path together stays within the provider's rate limit.
- A 429 is never a failure: the request waits what the server asked and is asked again; a
  run whose time runs out waiting goes on in a new run (a continuation, no retry spent). Only
  a limit that never lifts (LLM_RATE_LIMIT_GIVE_UP_S of nothing but 429s) fails the chunk.
- An item already answered (its result is in the job store) is never asked again: a retried
  chunk pays only for what is missing.
- A permanent failure of the item (context too long, refused, invalid) is that item's result:
  it is recorded with its reason and the chunk goes on with the next item. One of the endpoint
  (bad key, unknown model) fails the chunk: every other item would fail the same way.
- A transient failure ends the attempt (raised for the platform to retry) once the requests
  in flight have come back: everything answered is kept.
- Running out of budget having answered something is not a failure: OutOfBudget, and the chunk
  goes on in a new run (a continuation, no retry spent). Having answered nothing, it is a
  transient failure: the retries bound a chunk that cannot make progress.
- An output too big for a job store's row is kept in the data bucket and referenced.
- Each call's timeout is what the attempt has left, capped per call: no call outlives the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial

from chunking.budget import Limits
from chunking.errors import PermanentError, TransientError
from chunking.planning import Chunk, chunk_at
from chunking.prepare import spec_error
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import ItemResult, JobPath, JobRecord
from chunking.store import JobStore
from chunking.workload import (
    ChunkResult,
    ChunkUsage,
    OutOfBudget,
    PlanError,
    Planned,
    PlanPaused,
    StopJob,
    Workload,
)
from workloads.llm import blobs
from workloads.llm.batch import BatchChunk, cancel_batches
from workloads.llm.client import (
    LlmClient,
    ModelEndpointError,
    ModelRateLimited,
    missing_model_endpoint,
)
from workloads.llm.failures import merge_errors, write_chunk_errors
from workloads.llm.fields import LlmFields
from workloads.llm.index import Indexed, build_index, chunk_items, index_uri
from workloads.llm.input import FULL_CHECK_BYTES, InputError, Item, check_input
from workloads.llm.outputs import keep_output, merge_outputs, write_chunk_output
from workloads.llm.ratelimit import SharedBudget, estimate_tokens
from workloads.llm.spend import Spend
from workloads.llm.structured import checked

MIN_CALL_S = 1.0  # below this, a call cannot finish: stop and let the retry have the time


@dataclass(frozen=True)
class LlmChunkResult:
    items_answered: int
    items_failed: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def items_processed(self) -> int:
        return self.items_answered + self.items_failed


def load_items(job_id: str, fields: LlmFields, chunk: Chunk) -> list[Item]:
    """The chunk's items, from its own bytes of the input (through the job's index)."""
    index_at = index_uri(get_settings().llm_output_uri, job_id)
    try:
        return chunk_items(
            fields.input, fields.prompt_template, index_at, chunk.index, chunk.start, chunk.size
        )
    except InputError as err:
        raise PermanentError(f"the input cannot be read any more: {err}") from err


async def run_batch_chunk(
    store: JobStore,
    job: JobRecord,
    chunk: Chunk,
    *,
    budget_s: float = math.inf,
    winding_down: bool = False,
) -> LlmChunkResult:
    """Take the chunk's provider batch one step on (batch mode): its result once the batch
    has ended and is recorded, else WaitFor (the next step's run starts later)."""
    fields = LlmFields.of(job.spec)
    client = await asyncio.to_thread(
        LlmClient.from_settings, fields.model, fields.max_tokens, fields.response_format
    )

    async def keep(results: list[ItemResult]) -> list[ItemResult]:
        return await keep_results(store, job.job_id, chunk.index, results)

    async with client:
        load = partial(load_items, job.job_id, fields, chunk)
        deadline = time.monotonic() + budget_s
        discount = get_settings().llm_batch_discount(client.model)
        spend = Spend.of(store, job, fields.max_tokens, discount)
        run = BatchChunk(store, job, chunk.index, load, client, keep, deadline, spend)
        await (await run.load()).step(winding_down=winding_down)
    results = await asyncio.to_thread(store.item_results, job.job_id, chunk.index)
    return chunk_result(results)


async def run_llm_chunk(
    store: JobStore, job: JobRecord, chunk: Chunk, *, budget_s: float
) -> LlmChunkResult:
    """Read the chunk's own bytes of the input (through the job's index) and answer them
    within `budget_s`."""
    settings = get_settings()
    job_id, fields = job.job_id, LlmFields.of(job.spec)
    items = await asyncio.to_thread(load_items, job_id, fields, chunk)
    # Off the event loop: the key may be an SSM read (chunking.secrets) when not cached.
    client = await asyncio.to_thread(
        LlmClient.from_settings, fields.model, fields.max_tokens, fields.response_format
    )
    async with client:
        return await answer_items(
            store,
            client,
            job_id,
            chunk.index,
            items,
            budget_s=budget_s,
            call_timeout_s=settings.llm_call_timeout_s,
            concurrency=settings.llm_item_concurrency,
            spend=Spend.of(store, job, fields.max_tokens, discount=0.0),
        )


@dataclass
class _Run:
    """What a run's concurrent requests share: the items left, and how it went."""

    todo: deque[Item]
    kept: dict[int, ItemResult]
    done: set[int]
    answered_now: int = 0
    unasked: int = 0  # left for the next run: its budget ran out
    stop: BaseException | None = None  # a failure that ends the attempt: ask no more
    completion_tokens: int = 0


async def _ask(
    run: _Run,
    client: LlmClient,
    budget: SharedBudget,
    spend: Spend,
    item: Item,
    deadline: float,
    call_s: float,
) -> ItemResult | None:
    """The item's answer (or its permanent failure), waiting its turn in the model's budget
    and out every 429; None when the run's time ran out first (left for the next run). An
    answer that missed the response_format is asked again; if the time runs out before, the
    miss is its failure: its tokens are kept, and it is never asked a third time. A capped
    job's call holds its estimate of the cap while in flight (StopJob once the cap has not
    that much left)."""
    completion_mean = run.completion_tokens / run.answered_now if run.answered_now else None
    tokens = estimate_tokens(item.prompt, client.max_tokens, completion_mean)
    held = spend.estimate(item.prompt, completion_mean)
    first: ItemResult | None = None  # an answer that missed the response_format, asked again
    while True:
        # The latest a call may start and still finish in the run: anything later is left.
        last_start = time.time() + (deadline - time.monotonic()) - MIN_CALL_S
        if last_start < time.time() or not await budget.acquire(tokens, ready_by=last_start):
            return first
        left = deadline - time.monotonic()
        try:
            await spend.hold(held)
        except StopJob:
            budget.unsent(tokens)
            raise
        try:
            answer = await client.complete(item.prompt, timeout_s=min(call_s, left))
        except ModelRateLimited as err:
            await spend.release(held)  # not answered: nothing billed
            budget.unsent(tokens)
            refused = budget.refused(err.retry_after_s, err.seen, err.sent_at, ready_by=last_start)
            if not await refused:
                return first
            continue
        except ModelEndpointError:
            await spend.release(held)
            raise
        except PermanentError as err:
            await spend.release(held)
            budget.unsent(tokens)
            failed, _ = checked(ItemResult(item.index, -1, item.id, error=str(err)), None, first)
            return failed
        except BaseException:
            await asyncio.shield(spend.release(held))  # even when the run is cancelled
            raise
        budget.answered(tokens, answer.prompt_tokens + answer.completion_tokens, answer.seen)
        run.completion_tokens += answer.completion_tokens
        answered = ItemResult(
            item.index,
            -1,
            item.id,
            output=answer.output,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            latency_ms=answer.latency_ms,
        )
        await spend.release(held, spend.cost(answered))
        result, again = checked(answered, client.response_format, first)
        if not again:
            return result
        first = result


async def keep_results(
    store: JobStore, job_id: str, chunk_index: int, results: list[ItemResult]
) -> list[ItemResult]:
    """Keep items' results in the store (the first one of each wins), in as few writes as
    the store allows; those kept."""

    def prepared(result: ItemResult) -> ItemResult:
        if result.output is not None and result.error is None:
            # A huge answer goes to the data bucket: a store's row has a size limit.
            output, output_uri = keep_output(job_id, result.index, result.output)
            result = replace(result, output=output, output_uri=output_uri)
        return replace(result, chunk_index=chunk_index)

    def write() -> list[ItemResult]:
        ready = [prepared(result) for result in results]
        kept = store.record_items(job_id, ready)
        return [result for result, new in zip(ready, kept, strict=True) if new]

    return await asyncio.to_thread(write)


async def keep_result(
    store: JobStore, job_id: str, chunk_index: int, result: ItemResult
) -> ItemResult | None:
    """Keep an item's result in the store (the first one wins); what was kept, or None."""
    kept = await keep_results(store, job_id, chunk_index, [result])
    return kept[0] if kept else None


def chunk_result(results: list[ItemResult]) -> LlmChunkResult:
    return LlmChunkResult(
        items_answered=sum(r.error is None for r in results),
        items_failed=sum(r.error is not None for r in results),
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
    )


async def answer_items(
    store: JobStore,
    client: LlmClient,
    job_id: str,
    chunk_index: int,
    items: list[Item],
    *,
    budget_s: float,
    call_timeout_s: float,
    concurrency: int = 1,
    spend: Spend | None = None,
) -> LlmChunkResult:
    """Ask the model about the chunk's items not answered yet, `concurrency` at a time, each
    kept as it arrives. A failure that ends the attempt (transient, the endpoint's, or the
    job's spend cap reached: StopJob) stops new requests; those in flight are still kept
    before it is raised."""
    spend = spend or Spend(store, job_id, None, 0.0, 0.0, None)  # no cap: nothing held
    deadline = time.monotonic() + budget_s
    kept = {r.index: r for r in await asyncio.to_thread(store.item_results, job_id, chunk_index)}
    run = _Run(deque(item for item in items if item.index not in kept), kept, set(kept))
    settings = get_settings()
    budget = SharedBudget(
        store,
        client.budget_name,
        Limits(**settings.llm_rate_limit(client.model).model_dump()),
        burst_s=settings.llm_rate_burst_s,
        give_up_s=settings.llm_rate_limit_give_up_s,
        unasked=len(run.todo),
    )

    async def keep(item: Item, result: ItemResult) -> None:
        if kept := await keep_result(store, job_id, chunk_index, result):
            run.kept[item.index] = kept
        run.done.add(item.index)
        run.answered_now += 1

    async def worker() -> None:
        while run.todo and run.stop is None:
            item = run.todo.popleft()
            try:
                result = await _ask(run, client, budget, spend, item, deadline, call_timeout_s)
            except (PermanentError, TransientError, StopJob) as err:  # the chunk's, the job's
                run.stop = run.stop or err
                return
            if result is None:
                run.unasked += 1 + len(run.todo)
                run.todo.clear()
                return
            await keep(item, result)

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(run.todo)))))
    finally:
        await budget.close()
        waited_ms = round(budget.waited_s * 1000)
        await asyncio.to_thread(store.count_rate_limiting, job_id, budget.refusals, waited_ms)
    if run.stop is not None:
        raise run.stop
    if run.unasked:
        unanswered = len(items) - len(run.done)
        if run.answered_now:
            raise OutOfBudget(
                f"time budget spent with {unanswered} items of chunk {chunk_index} "
                f"unanswered ({run.answered_now} answered in this run); it goes on in a new run"
            )
        if budget.refusals or budget.waited_s:
            raise OutOfBudget(
                f"time budget spent waiting for the model's rate limit with {unanswered} items "
                f"of chunk {chunk_index} unanswered; it goes on in a new run"
            )
        raise TransientError(
            f"time budget spent with {unanswered} items of chunk {chunk_index} unanswered "
            "and none answered in this run; they are asked on the next attempt"
        )
    results = list(run.kept.values())
    if len(run.kept) < len(run.done):
        # A concurrent delivery kept some answers first (the first one wins): read what is kept.
        results = await asyncio.to_thread(store.item_results, job_id, chunk_index)
    return chunk_result(results)


SETTLE_MARGIN_S = 5.0  # of an attempt's budget, kept for writing its outputs and outcome
STOP_PAGE = 500  # running chunks a cancelled job's stop looks at per step or message


def keep_items(fields: LlmFields, path: JobPath) -> str:
    """Write the items given in the request as a JSONL input, named by its content (the same
    items again are the same file, so a repeated request is the same job); its URI. Locally
    under LLM_INPUT_ROOT (where inputs may be), in the cloud beside the outputs in S3."""
    assert fields.items is not None
    lines = [item.model_dump_json(exclude_none=True) + "\n" for item in fields.items]
    data = "".join(lines).encode()
    name = f"{hashlib.sha256(data).hexdigest()}.jsonl"
    settings = get_settings()
    if path == "cloud" or blobs.is_s3(settings.llm_output_uri):
        uri = blobs.join(settings.llm_output_uri, "items", name)
    else:
        uri = str(settings.llm_input_root / "items" / name)
    blobs.write_bytes(uri, data)
    return uri


class Llm(Workload):
    name = "llm"
    Fields = LlmFields
    produces_output = True
    reports_usage = True

    def prepare(self, spec: JobSpec, path: JobPath) -> JobSpec:
        """Check the input in constant time: where it is, its size, and every line only of an
        input of at most FULL_CHECK_BYTES (a few ms of reading: a demo's bad line is refused
        at once); a larger one is validated and counted by `plan`."""
        fields = LlmFields.of(spec)
        if fields.items is not None:
            # Kept as the job's input, so every chunk reads only its own lines, as from a file.
            spec = spec.model_copy(update={"input_uri": keep_items(fields, path), "items": None})
            fields = LlmFields.of(spec)
        uri = fields.input
        if path == "cloud" and not blobs.is_s3(uri):
            message = (
                "the cloud path reads its input from S3: upload the file, pass s3://bucket/key"
            )
            raise spec_error("input_uri", message, uri)
        if problem := missing_model_endpoint():
            raise spec_error("workload", f"no model to call: {problem}", spec.workload)
        try:
            # Where a local input may be, and how much is read, is checked as it is read.
            count = check_input(uri, fields.prompt_template, full_check_bytes=FULL_CHECK_BYTES)
        except InputError as err:
            raise spec_error("input_uri", str(err), uri) from err
        if "total_items" in spec.model_fields_set and spec.total_items != count:
            # Counted from the input: one given must agree with it, so it is checked only
            # where the count is known now (what `plan` reads, the caller said nothing about).
            if count is None:
                message = (
                    f"{spec.total_items} given, but an input over {FULL_CHECK_BYTES} bytes is "
                    "counted when the job starts, not here: leave total_items out"
                )
            else:
                message = (
                    f"{spec.total_items} given, but {uri} has {count} items: leave "
                    "total_items out, it is counted from the input"
                )
            raise spec_error("total_items", message, spec.total_items)
        return spec

    def known_items(self, spec: JobSpec) -> int | None:
        return None  # counted from the input, by `plan`

    def plan(
        self, job: JobRecord, resume: Mapping[str, int] | None, deadline: float | None
    ) -> Planned | PlanPaused:
        fields = LlmFields.of(job.spec)
        settings = get_settings()
        try:
            step = build_index(
                fields.input,
                fields.prompt_template,
                job.spec.chunk_size,
                index_uri(settings.llm_output_uri, job.job_id),
                resume=resume,
                deadline=deadline,
                max_bytes=settings.llm_input_max_bytes,
            )
        except InputError as err:
            raise PlanError(f"input_uri: {err}") from err
        if not isinstance(step, Indexed):
            return PlanPaused(step.state)
        return Planned(step.total_items)

    async def run_chunk(
        self, store: JobStore, job: JobRecord, chunk: Chunk, attempt: int, budget_s: float | None
    ) -> ChunkResult:
        # It stops itself in time (keeping its answers), leaving room to settle; with no
        # budget (the caller's platform sets none) only each call's own timeout bounds it.
        budget = budget_s if budget_s is not None else math.inf
        margin = min(SETTLE_MARGIN_S, budget * 0.1)
        fields = LlmFields.of(job.spec)
        if fields.mode == "batch":
            result = await run_batch_chunk(store, job, chunk, budget_s=budget - margin)
        else:
            result = await run_llm_chunk(store, job, chunk, budget_s=budget - margin)
        return ChunkResult(items_processed=result.items_processed)

    def batch_discount(self, spec: JobSpec) -> float | None:
        fields = LlmFields.of(spec)
        if fields.mode != "batch":
            return None
        settings = get_settings()
        return settings.llm_batch_discount(fields.model or settings.openai_model)

    async def stop_outside(self, store: JobStore, job: JobRecord, after: int) -> int | None:
        if LlmFields.of(job.spec).mode != "batch":
            return None
        page = await asyncio.to_thread(store.chunk_page, job.job_id, "running", after, STOP_PAGE)
        batched = [chunk.index for chunk in page if chunk.batch and chunk.batch.get("id")]
        if batched:
            await cancel_batches(store, job, batched)
        return page[-1].index if len(page) == STOP_PAGE else None

    async def wind_down(self, store: JobStore, job: JobRecord, chunk_index: int) -> str | None:
        if LlmFields.of(job.spec).mode != "batch":
            return None
        state, _ = await asyncio.to_thread(store.chunk_batch, job.job_id, chunk_index)
        if state is None:
            return None  # never submitted: nothing to stop
        chunk = chunk_at(job.total_items, job.spec.chunk_size, chunk_index)
        result = await run_batch_chunk(store, job, chunk, winding_down=True)
        return f"{result.items_processed} items answered before the cancel are kept"

    def before_settle(self, store: JobStore, job: JobRecord, chunk_index: int) -> ChunkUsage:
        structured = LlmFields.of(job.spec).response_format is not None
        results = write_chunk_output(store, job.job_id, chunk_index, structured)
        write_chunk_errors(job, chunk_index, results)
        return ChunkUsage(
            prompt_tokens=sum(r.prompt_tokens for r in results),
            completion_tokens=sum(r.completion_tokens for r in results),
            items_failed=sum(r.error is not None for r in results),
            items_answered=sum(r.error is None for r in results),
        )

    def after_job_finished(self, store: JobStore, job: JobRecord) -> None:
        if job.output_uri is None:
            output_uri = merge_outputs(job.job_id, job.total_chunks)
            store.set_output_uri(job.job_id, output_uri, merge_errors(store, job))
