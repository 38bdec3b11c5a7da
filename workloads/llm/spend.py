"""A capped job's side of its spend (`max_cost_usd`): each model call holds its estimated cost
of the cap before it begins, and gives the hold back with what it cost when it returns.

The job's row keeps two counters (the store's `reserve_spend` / `record_spend`): what its
answers cost (`spent_nano`) and what is left of the cap once the calls in flight are held
(`headroom_nano`). A hold is one conditional write that takes from the headroom only if that
much is left, so no call begins once the spend plus the calls in flight would pass the cap:
the job overshoots it by at most what was in flight (and what an answer cost beyond its
estimate, when no `max_tokens` bounds it). A job with no cap writes nothing.

A call's estimate is its prompt (4 characters a token) and its completion (`max_tokens`, else
the run's mean so far, else COMPLETION_ESTIMATE) at the price the job pays (the batch price in
batch mode); what an answer cost is its reported tokens at that price.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass

from chunking.settings import get_settings
from chunking.status import ItemResult, JobRecord
from chunking.store import JobStore
from chunking.workload import StopJob
from workloads.llm.input import Item
from workloads.llm.ratelimit import CHARS_PER_TOKEN, COMPLETION_ESTIMATE

NANO_PER_USD_PER_MTOK = 1_000  # USD per million tokens, as billionths of a USD per token


@dataclass(frozen=True)
class Spend:
    """The job's cap as a run of one of its chunks sees it (`capped` False: nothing to do)."""

    store: JobStore
    job_id: str
    cap_usd: float | None
    prompt_nano: float  # per token, at the price the job pays
    completion_nano: float
    max_tokens: int | None

    @classmethod
    def of(cls, store: JobStore, job: JobRecord, max_tokens: int | None, discount: float) -> Spend:
        prompt, completion = get_settings().llm_prices
        per = NANO_PER_USD_PER_MTOK * (1 - discount)
        return cls(
            store, job.job_id, job.spec.max_cost_usd, prompt * per, completion * per, max_tokens
        )

    @property
    def capped(self) -> bool:
        return self.cap_usd is not None

    def estimate(self, prompt: str, completion_mean: float | None = None) -> int:
        """The hold of a call with this prompt, in billionths of a USD."""
        completion = self.max_tokens or completion_mean or COMPLETION_ESTIMATE
        prompt_tokens = math.ceil(len(prompt) / CHARS_PER_TOKEN)
        return math.ceil(prompt_tokens * self.prompt_nano + completion * self.completion_nano)

    def cost(self, result: ItemResult) -> int:
        """What an answer cost, in billionths of a USD."""
        tokens = result.prompt_tokens * self.prompt_nano
        return round(tokens + result.completion_tokens * self.completion_nano)

    async def hold(self, nano: int) -> None:
        """Hold `nano` of the cap for calls about to begin; StopJob when it has not that much
        left (nothing held)."""
        if not self.capped or nano <= 0:
            return
        if await asyncio.to_thread(self.store.reserve_spend, self.job_id, nano):
            return
        raise await self.reached(nano)

    async def release(self, held: int, spent: int = 0) -> None:
        """Calls came back: give back what they held, count what they cost."""
        if self.capped:
            await asyncio.to_thread(self.store.record_spend, self.job_id, held, spent)

    async def kept(self, results: Iterable[ItemResult], items: dict[int, Item]) -> None:
        """Results kept for items whose calls held their estimate (batch mode): each gives
        back its item's hold and counts what it cost."""
        if not self.capped:
            return
        results = list(results)
        held = sum(self.estimate(items[r.index].prompt) for r in results if r.index in items)
        await self.release(held, sum(self.cost(r) for r in results))

    async def reached(self, wanted: int) -> StopJob:
        """The job's stop for its cap, saying how far its spend got."""
        job = await asyncio.to_thread(self.store.get_job, self.job_id)
        spent = job.tally.spent_nano / 1e9 if job else 0.0
        return StopJob(
            "max_cost_usd",
            f"spend cap reached: max_cost_usd=${self.cap_usd:g}, ${spent:.3g} spent and the "
            f"rest held by calls in flight when the next call's ${wanted / 1e9:.3g} was refused",
        )
