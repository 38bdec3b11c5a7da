"""The llm workload (`Llm`), and its chunk: ask the model about each item, keeping every answer
as it arrives.

- An item already answered (its result is in the job store) is never asked again: a retried
  chunk pays only for what is missing.
- A permanent failure of the item (context too long, refused, invalid) is that item's result:
  it is recorded with its reason and the chunk goes on with the next item. One of the endpoint
  (bad key, unknown model) fails the chunk: every other item would fail the same way.
- A transient failure or a rate limit ends the attempt (raised for the platform to retry);
  everything answered so far is already kept.
- Running out of budget having answered something is not a failure: OutOfBudget, and the chunk
  goes on in a new run (a continuation, no retry spent). Having answered nothing, it is a
  transient failure: the retries bound a chunk that cannot make progress.
- An output too big for a job store's row is kept in the data bucket and referenced.
- Each call's timeout is what the attempt has left, capped per call: no call outlives the run.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from chunking.errors import PermanentError, TransientError
from chunking.planning import Chunk
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
    Workload,
)
from workloads.llm import blobs
from workloads.llm.client import LlmClient, ModelEndpointError, missing_model_endpoint
from workloads.llm.fields import LlmFields
from workloads.llm.index import Indexed, build_index, chunk_items, index_uri
from workloads.llm.input import FULL_CHECK_BYTES, InputError, Item, check_input
from workloads.llm.outputs import keep_output, merge_outputs, write_chunk_output

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


async def run_llm_chunk(
    store: JobStore, job_id: str, fields: LlmFields, chunk: Chunk, *, budget_s: float
) -> LlmChunkResult:
    """Read the chunk's own bytes of the input (through the job's index) and answer them
    within `budget_s`."""
    index_at = index_uri(get_settings().llm_output_uri, job_id)
    try:
        items = await asyncio.to_thread(
            chunk_items,
            fields.input,
            fields.prompt_template,
            index_at,
            chunk.index,
            chunk.start,
            chunk.size,
        )
    except InputError as err:
        raise PermanentError(f"the input cannot be read any more: {err}") from err
    # Off the event loop: the key may be an SSM read (chunking.secrets) when not cached.
    client = await asyncio.to_thread(LlmClient.from_settings, fields.model, fields.max_tokens)
    async with client:
        return await answer_items(
            store,
            client,
            job_id,
            chunk.index,
            items,
            budget_s=budget_s,
            call_timeout_s=get_settings().llm_call_timeout_s,
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
) -> LlmChunkResult:
    deadline = time.monotonic() + budget_s
    kept = {r.index: r for r in await asyncio.to_thread(store.item_results, job_id, chunk_index)}
    done = set(kept)
    answered_now = 0
    for item in items:
        if item.index in done:
            continue
        left = deadline - time.monotonic()
        if left < MIN_CALL_S:
            unanswered = len(items) - len(done)
            if answered_now:
                raise OutOfBudget(
                    f"time budget spent with {unanswered} items of chunk {chunk_index} "
                    f"unanswered ({answered_now} answered in this run); it goes on in a new run"
                )
            raise TransientError(
                f"time budget spent with {unanswered} items of chunk {chunk_index} unanswered "
                "and none answered in this run; they are asked on the next attempt"
            )
        try:
            answer = await client.complete(item.prompt, timeout_s=min(call_timeout_s, left))
        except ModelEndpointError:
            raise
        except PermanentError as err:
            result = ItemResult(item.index, chunk_index, item.id, error=str(err))
        else:
            # A huge answer goes to the data bucket: a store's row has a size limit.
            output, output_uri = await asyncio.to_thread(
                keep_output, job_id, item.index, answer.output
            )
            result = ItemResult(
                item.index,
                chunk_index,
                item.id,
                output=output,
                output_uri=output_uri,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                latency_ms=answer.latency_ms,
            )
        if await asyncio.to_thread(store.record_item, job_id, result):
            kept[item.index] = result
        done.add(item.index)
        answered_now += 1
    results = list(kept.values())
    if len(kept) < len(done):
        # A concurrent delivery kept some answers first (the first one wins): read what is kept.
        results = await asyncio.to_thread(store.item_results, job_id, chunk_index)
    return LlmChunkResult(
        items_answered=sum(r.error is None for r in results),
        items_failed=sum(r.error is not None for r in results),
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
    )


SETTLE_MARGIN_S = 5.0  # of an attempt's budget, kept for writing its outputs and outcome


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
        result = await run_llm_chunk(store, job.job_id, fields, chunk, budget_s=budget - margin)
        return ChunkResult(items_processed=result.items_processed)

    def before_settle(self, store: JobStore, job: JobRecord, chunk_index: int) -> ChunkUsage:
        results = write_chunk_output(store, job.job_id, chunk_index)
        return ChunkUsage(
            prompt_tokens=sum(r.prompt_tokens for r in results),
            completion_tokens=sum(r.completion_tokens for r in results),
            items_failed=sum(r.error is not None for r in results),
        )

    def after_job_finished(self, store: JobStore, job: JobRecord) -> None:
        if job.output_uri is None:
            store.set_output_uri(job.job_id, merge_outputs(job.job_id, job.total_chunks))
