"""The llm workload's chunk: ask the model about each item, keeping every answer as it arrives.

- An item already answered (its result is in the job store) is never asked again: a retried
  chunk pays only for what is missing.
- A permanent failure of the item (context too long, refused, invalid) is that item's result:
  it is recorded with its reason and the chunk goes on with the next item. One of the endpoint
  (bad key, unknown model) fails the chunk: every other item would fail the same way.
- A transient failure or a rate limit ends the attempt (raised for the platform to retry);
  everything answered so far is already kept.
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
from workloads.llm.client import LlmClient, ModelEndpointError
from workloads.llm.input import InputError, Item, read_items

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
    """Read the chunk's own lines of the input and answer them within `budget_s`."""
    assert spec.input_uri is not None  # JobSpec guarantees it for the llm workload
    try:
        items = await asyncio.to_thread(
            read_items, spec.input_uri, spec.prompt_template, chunk.start, chunk.end
        )
    except InputError as err:
        raise PermanentError(f"the input cannot be read any more: {err}") from err
    if len(items) != chunk.size:
        raise PermanentError(
            f"the input has changed since the job started: chunk {chunk.index} expected items "
            f"{chunk.start}..{chunk.end - 1} but the file has {chunk.start + len(items)} items"
        )
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
    kept = await asyncio.to_thread(store.item_results, job_id, chunk_index)
    done = {result.index for result in kept}
    for item in items:
        if item.index in done:
            continue
        left = deadline - time.monotonic()
        if left < MIN_CALL_S:
            raise TransientError(
                f"time budget spent with {len(items) - len(done)} items of chunk "
                f"{chunk_index} unanswered; they are asked on the next attempt"
            )
        try:
            answer = await client.complete(item.prompt, timeout_s=min(call_timeout_s, left))
        except ModelEndpointError:
            raise
        except PermanentError as err:
            result = ItemResult(item.index, chunk_index, item.id, error=str(err))
        else:
            result = ItemResult(
                item.index, chunk_index, item.id, output=answer.output,
                prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                latency_ms=answer.latency_ms,
            )  # fmt: skip
        await asyncio.to_thread(store.record_item, job_id, result)
        done.add(item.index)
    results = await asyncio.to_thread(store.item_results, job_id, chunk_index)
    return LlmChunkResult(
        items_answered=sum(r.error is None for r in results),
        items_failed=sum(r.error is not None for r in results),
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
    )
