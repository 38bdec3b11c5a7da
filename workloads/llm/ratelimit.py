"""A chunk run's side of its model's shared budget (chunking.budget): leases taken in small
batches, handed to the run's concurrent requests, corrected by what the provider says.

- `acquire` gives a request its turn: from the run's current lease, or from a new one taken
  in one store write for up to `LEASE_S` of the rate (never more requests than the run still
  has to ask), then sleeps until the lease is ready. Nothing is granted that would be ready
  too late for the run to use: the request is left for the next run.
- `answered` keeps, for the next write, the difference between the tokens the answer reported
  and its estimate, and the answer's `x-ratelimit-*` headers.
- `refused` (a 429) tells the store at once: every process waits what the server asked.
- `close` gives back what the run leased and did not use, in its last write.

A request's tokens are estimated before it is sent from its prompt (4 characters a token,
OpenAI's rule of thumb: no tokenizer download is possible offline) and its `max_tokens`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chunking.budget import Lease, LeaseAsk, Limits, Observation, Source
from chunking.errors import PermanentError
from chunking.store import JobStore

LEASE_S = 0.2  # of the rate taken per lease: a store write per that much of the traffic
# While the rate is being found, no turn is taken further ahead than this: a turn taken at a
# low first guess would keep its place long after the rate has grown (or been announced).
PROBING_HORIZON_S = 1.0
LATER = -1.0  # _take: no turn within the horizon
CHARS_PER_TOKEN = 4
COMPLETION_ESTIMATE = 256  # tokens, for a request with no max_tokens, until answers tell


def _number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(headers[name])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def observe(headers: Mapping[str, str], at: float) -> Observation | None:
    """What an answer's x-ratelimit-* headers say (None when it sent none)."""
    seen = Observation(
        at=at,
        limit_requests=_number(headers, "x-ratelimit-limit-requests"),
        remaining_requests=_number(headers, "x-ratelimit-remaining-requests"),
        limit_tokens=_number(headers, "x-ratelimit-limit-tokens"),
        remaining_tokens=_number(headers, "x-ratelimit-remaining-tokens"),
    )
    return seen if seen != Observation(at=at) else None


def estimate_tokens(prompt: str, max_tokens: int | None, completion_mean: float | None) -> int:
    completion = max_tokens or completion_mean or COMPLETION_ESTIMATE
    return math.ceil(len(prompt) / CHARS_PER_TOKEN) + math.ceil(completion)


@dataclass
class _Held:
    """What the run holds of its last lease."""

    requests: int = 0
    tokens: int = 0
    ready_at: float = 0.0


@dataclass
class SharedBudget:
    store: JobStore
    name: str
    limits: Limits
    burst_s: float
    give_up_s: float
    unasked: int  # requests the run has still to make (no lease is larger)
    held: _Held = field(default_factory=_Held)
    rpm: float | None = None
    tpm: float | None = None
    source: Source = "probing"  # until the first lease says
    correction: int = 0
    observation: Observation | None = None
    answered_since: bool = False
    next_turn: float = 0.0  # when the last lease not granted would have been ready
    refusals: int = 0  # 429s
    waited_s: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _lease_size(self, tokens: int) -> int:
        sizes = [self.unasked]
        if self.rpm:
            sizes.append(math.floor(self.rpm / 60 * LEASE_S))
        if self.tpm:
            sizes.append(math.floor(self.tpm / 60 * LEASE_S / max(tokens, 1)))
        if not self.rpm and not self.tpm:
            sizes.append(1)  # nothing known yet: the first answer tells
        return max(1, min(sizes))

    def _ask(self, **what: Any) -> LeaseAsk:
        """A write's ask, carrying what was learned since the last one (and clearing it)."""
        learned = LeaseAsk(
            token_correction=self.correction,
            observation=self.observation,
            answered=self.answered_since,
        )
        ask = replace(learned, **what)
        self.correction, self.observation, self.answered_since = 0, None, False
        return ask

    async def _write(self, ask: LeaseAsk) -> Lease:
        lease = await asyncio.to_thread(
            self.store.take_lease, self.name, ask, self.limits, self.burst_s
        )
        self.rpm, self.tpm, self.source = lease.rpm, lease.tpm, lease.source
        since = lease.limited_since
        if since is not None and time.time() - since > self.give_up_s:
            raise PermanentError(
                f"rate limited: the model has answered nothing but 429s for "
                f"{time.time() - since:.0f} s (LLM_RATE_LIMIT_GIVE_UP_S={self.give_up_s:g}): "
                "its limit is not lifting"
            )
        return lease

    def _give_back(self) -> None:
        """What is held and unused goes back with the next write."""
        self.correction -= self.held.tokens
        self.held = _Held()

    async def acquire(self, tokens: int, ready_by: float) -> bool:
        """Wait for this request's turn; False when it would not come by `ready_by` (epoch s)."""
        started = time.time()
        while (ready_at := await self._take(tokens, ready_by)) == LATER:
            # Probing: no turn within the horizon. Asked again once the turn it would have had
            # is that near (sooner, if the rate has grown meanwhile).
            again = max(self.next_turn - PROBING_HORIZON_S, time.time() + 0.05)
            if again > ready_by:
                return False
            await asyncio.sleep(again - time.time())
        if ready_at is None:
            return False
        wait = ready_at - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self.waited_s += time.time() - started
        return True

    async def _take(self, tokens: int, ready_by: float) -> float | None:
        """A turn (when it may go), from what the run holds or a new lease; None if there is
        none by `ready_by`, LATER if there is none within the horizon while probing."""
        async with self._lock:
            held = self.held
            if held.requests < 1 or (self.tpm and held.tokens < tokens):
                returned_requests = held.requests
                self._give_back()
                size = self._lease_size(tokens)
                horizon = time.time() + PROBING_HORIZON_S
                probing = self.source == "probing" and horizon < ready_by
                if probing and self.next_turn > horizon:
                    return LATER  # another request of this run was just told so: no write
                lease = await self._write(
                    self._ask(
                        requests=size,
                        tokens=size * tokens,
                        returned_requests=returned_requests,
                        ready_by=horizon if probing else ready_by,
                    )
                )
                if not lease.requests:
                    self.next_turn = lease.ready_at
                    return LATER if probing else None
                self.held = held = _Held(lease.requests, lease.tokens, lease.ready_at)
            held.requests -= 1
            held.tokens = max(0, held.tokens - tokens)
            self.unasked -= 1
            return held.ready_at

    def answered(self, leased_tokens: int, used_tokens: int, seen: Observation | None) -> None:
        self.correction += used_tokens - leased_tokens
        self.answered_since = True
        if seen is not None:
            self.observation = seen

    def unsent(self, leased_tokens: int) -> None:
        """A request that got its turn and was refused: its tokens go back (the request
        itself counts: the provider saw it)."""
        self.correction -= leased_tokens

    async def refused(
        self, wait_s: float, seen: Observation | None, sent_at: float, ready_by: float
    ) -> bool:
        """A 429: every process waits `wait_s` (one write now); then this request sleeps it.
        False when the wait ends after `ready_by`."""
        self.refusals += 1
        self.unasked += 1  # it is asked again
        async with self._lock:
            if seen is not None:
                self.observation = seen
            # What the run holds is dropped, not given back: given back, it would go out at once
            # into the provider's limit that just refused.
            self._give_back()
            now = time.time()
            await self._write(
                self._ask(refused_for_s=wait_s, refused_at=now, refused_sent_at=sent_at)
            )
        until = now + wait_s
        if until > ready_by:
            return False
        self.waited_s += wait_s
        await asyncio.sleep(wait_s)
        return True

    async def close(self) -> None:
        """Give back what the run did not use, with what it learned: one write, if any."""
        async with self._lock:
            returned_requests = self.held.requests
            self._give_back()
            if returned_requests or self.correction or self.observation or self.answered_since:
                await self._write(self._ask(returned_requests=returned_requests))
