"""The llm workload's chunk: ask the model about each item, keeping every answer as it arrives.

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
import time
from dataclasses import dataclass

from chunking.errors import PermanentError, TransientError
from chunking.planning import Chunk
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import ItemResult
from chunking.store import JobStore
from chunking.workload import OutOfBudget
from workloads.llm.client import LlmClient, ModelEndpointError
from workloads.llm.index import chunk_items, index_uri
from workloads.llm.input import InputError, Item
from workloads.llm.outputs import keep_output

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
    store: JobStore, job_id: str, spec: JobSpec, chunk: Chunk, *, budget_s: float
) -> LlmChunkResult:
    """Read the chunk's own bytes of the input (through the job's index) and answer them
    within `budget_s`."""
    assert spec.input_uri is not None  # JobSpec guarantees it for the llm workload
    index_at = index_uri(get_settings().llm_output_uri, job_id)
    try:
        items = await asyncio.to_thread(
            chunk_items, spec.input_uri, spec.prompt_template, index_at, chunk.index,
            chunk.start, chunk.size,
        )  # fmt: skip
    except InputError as err:
        raise PermanentError(f"the input cannot be read any more: {err}") from err
    # Off the event loop: the key may be an SSM read (chunking.secrets) when not cached.
    client = await asyncio.to_thread(LlmClient.from_settings, spec.model, spec.max_tokens)
    async with client:
        return await answer_items(
            store, client, job_id, chunk.index, items,
            budget_s=budget_s, call_timeout_s=get_settings().llm_call_timeout_s,
        )  # fmt: skip


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
                item.index, chunk_index, item.id, output=output, output_uri=output_uri,
                prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                latency_ms=answer.latency_ms,
            )  # fmt: skip
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
