"""A model's shared request and token budget: the decision a job store applies when a process
takes a lease of it (`take`), written once for every store.

The budget is a token bucket per model and per dimension (requests, tokens) kept in the
generic cell rate algorithm's form: one instant per dimension, `tat` (its theoretical arrival
time), past which the bucket is full again. Taking n requests moves it n / rate later; a
lease is granted at once, with the instant it may be spent (`ready_at`: now, or later when
the bucket is empty), so a process never polls the store: it takes its place in the queue in
one conditional write and sleeps until its turn. At most `burst_s` of the rate is taken at
once, so what is sent stays within any provider bucket at least that large.

What the lease write carries corrects the bucket ("the provider's own word wins"):
- the tokens the answers reported, against the estimate they were leased with;
- the provider's `x-ratelimit-limit-*` (its limit, used when none is configured, and never
  exceeded when one is), and `x-ratelimit-remaining-*`: the bucket never holds more than the
  provider says is left (another client on the same key spends it too);
- a 429's wait (`retry-after`): nothing is granted before it ends.
With no limit configured nor announced, the rate is found (`source` "probing"): it starts at
`PROBE_START_RPM` and grows by a quarter every `PROBE_PERIOD_S` it is used up, until the first
429, which halves it; each later 429 cuts it to `PROBE_CUT` of itself (once a period: the 429s
of requests sent before a cut tell of the overshoot it was for), and it grows by
`PROBE_GROWTH` each period with no 429.

Pure: no store, no clock of its own (the caller passes `now`, epoch seconds).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

Source = Literal["configured", "headers", "probing"]  # where the limits in force come from

PROBE_START_RPM = 600.0  # where a rate nobody stated starts
PROBE_MIN_RPM = 6.0
PROBE_PERIOD_S = 1.0
PROBE_CUT = 0.7
PROBE_GROWTH = 1.05
PROBE_SLOW_START = 1.25  # growth per period until the first 429


@dataclass(frozen=True)
class Limits:
    """Requests and tokens per minute (None: not limited in that dimension)."""

    rpm: float | None = None
    tpm: float | None = None


@dataclass(frozen=True)
class Observation:
    """What one answer's `x-ratelimit-*` headers said, at `at` (when the request was sent)."""

    at: float
    limit_requests: float | None = None
    remaining_requests: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None


@dataclass(frozen=True)
class LeaseAsk:
    """One lease write: what a process takes, and what it learned since its last write."""

    requests: int = 0
    tokens: int = 0
    # Tokens its answers reported minus what they were leased with (negative: given back).
    token_correction: int = 0
    returned_requests: int = 0  # leased before and not used: given back
    observation: Observation | None = None
    # A 429 asked to wait this long from `refused_at`; the refused request was sent at
    # `refused_sent_at` (a request sent before the rate last changed says nothing of the new).
    refused_for_s: float | None = None
    refused_at: float | None = None
    refused_sent_at: float | None = None
    answered: bool = False  # an answer came since the last write: the limit lifts
    # Grant nothing that would be ready after this (epoch s): the asker could not spend it.
    ready_by: float = math.inf


@dataclass(frozen=True)
class Lease:
    requests: int
    tokens: int
    ready_at: float  # epoch s; `requests` 0: nothing granted (not ready by `ready_by`)
    wait_s: float  # ready_at - now, when granted
    limited_since: float | None  # the first of an unbroken run of 429s, if one is going on
    rpm: float | None  # the rate in force
    tpm: float | None
    source: Source


@dataclass(frozen=True)
class Bucket:
    """What the store keeps per model (as JSON)."""

    tat_requests: float = 0.0
    tat_tokens: float = 0.0
    blocked_until: float = 0.0
    announced_rpm: float | None = None  # the provider's last word on its limits
    announced_tpm: float | None = None
    probe_rpm: float | None = None  # the rate found, when nobody stated one
    probed_at: float = 0.0
    cut_once: bool = False  # probing: a 429 has been seen (slow start is over)
    refused_last: float = 0.0  # when the last 429 came
    limited_since: float | None = None

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None) -> Bucket | None:
        if not text:
            return None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    def rates(self, configured: Limits) -> tuple[float | None, float | None, Source]:
        """The limits in force: the lower of the configured and the announced one; with
        neither in any dimension, the rate being probed."""
        rpm = min(filter(None, (configured.rpm, self.announced_rpm)), default=None)
        tpm = min(filter(None, (configured.tpm, self.announced_tpm)), default=None)
        if configured.rpm or configured.tpm:
            return rpm, tpm, "configured"
        if rpm or tpm:
            return rpm, tpm, "headers"
        return self.probe_rpm or PROBE_START_RPM, None, "probing"


def _learn(bucket: Bucket, observed: Observation | None, now: float, burst_s: float) -> Bucket:
    """The provider's announced limits kept; a probed rate grown when it is time, and only
    while it is used up (grown unused, it would say nothing about the provider)."""
    if observed and (observed.limit_requests or observed.limit_tokens):
        return replace(
            bucket,
            announced_rpm=observed.limit_requests or bucket.announced_rpm,
            announced_tpm=observed.limit_tokens or bucket.announced_tpm,
        )
    if bucket.probe_rpm is None:
        return replace(bucket, probe_rpm=PROBE_START_RPM, probed_at=now)
    used_up = bucket.tat_requests > now + burst_s / 2
    quiet = now - max(bucket.probed_at, bucket.refused_last) >= PROBE_PERIOD_S  # no 429 lately
    if quiet and used_up:
        grown = bucket.probe_rpm * (PROBE_GROWTH if bucket.cut_once else PROBE_SLOW_START)
        return replace(bucket, probe_rpm=grown, probed_at=now)
    return bucket


def _capped(tat: float, rate: float, burst_s: float, remaining: float | None, at: float) -> float:
    """`tat` moved so the bucket holds no more than the provider said was left at `at`."""
    if remaining is None:
        return tat
    return max(tat, at + burst_s - remaining / rate)


def take(
    stored: Bucket | None, ask: LeaseAsk, configured: Limits, now: float, burst_s: float
) -> tuple[Bucket, Lease]:
    """The bucket after this write, and what it grants."""
    bucket = _learn(stored or Bucket(), ask.observation, now, burst_s)
    rpm, tpm, source = bucket.rates(configured)
    rate_r = rpm / 60 if rpm else None
    rate_t = tpm / 60 if tpm else None
    # `tat` at or before now: the bucket is full (it holds `burst_s` of the rate, no more).
    tat_r, tat_t = max(bucket.tat_requests, now), max(bucket.tat_tokens, now)
    blocked, limited_since = bucket.blocked_until, bucket.limited_since
    if rate_t and ask.token_correction:
        tat_t = max(tat_t + ask.token_correction / rate_t, now)
    if rate_r and ask.returned_requests:
        tat_r = max(tat_r - ask.returned_requests / rate_r, now)
    if ask.observation:
        seen = ask.observation
        if rate_r:
            tat_r = _capped(tat_r, rate_r, burst_s, seen.remaining_requests, seen.at)
        if rate_t:
            tat_t = _capped(tat_t, rate_t, burst_s, seen.remaining_tokens, seen.at)
    if ask.answered:
        limited_since = None
    if ask.refused_for_s is not None:
        refused_at = ask.refused_at if ask.refused_at is not None else now
        blocked = max(blocked, refused_at + ask.refused_for_s)
        bucket = replace(bucket, refused_last=max(bucket.refused_last, refused_at))
        if rate_r:  # a 429 says the provider had nothing left: neither has the bucket
            tat_r = _capped(tat_r, rate_r, burst_s, 0, refused_at)
        if limited_since is None:
            limited_since = refused_at
        # Probing, one cut per wait: the 429s of requests sent before it say the same.
        sent_at = ask.refused_sent_at if ask.refused_sent_at is not None else refused_at
        if source == "probing" and rpm and sent_at >= bucket.probed_at:
            # The first 429 comes a latency and the provider's own burst after the rate passed
            # the limit, when slow start has grown it further: halved, as TCP's slow start is.
            cut = max(PROBE_MIN_RPM, rpm * (PROBE_CUT if bucket.cut_once else 0.5))
            # The provider's bucket refills for a period before a 429 may cut again: until then
            # 429s tell of the overshoot already cut for.
            settled = blocked + PROBE_PERIOD_S
            bucket = replace(bucket, probe_rpm=cut, probed_at=settled, cut_once=True)

    ready = max(now, blocked)
    # A lease larger than the burst goes only when the bucket is full, and empties it.
    cost_r = ask.requests / rate_r if rate_r else 0.0
    cost_t = ask.tokens / rate_t if rate_t else 0.0
    if rate_r:
        ready = max(ready, tat_r + min(cost_r, burst_s) - burst_s)
    if rate_t:
        ready = max(ready, tat_t + min(cost_t, burst_s) - burst_s)
    granted = ask.requests > 0 and ready <= ask.ready_by
    if granted:
        if rate_r:
            tat_r = max(tat_r, ready) + cost_r
        if rate_t:
            tat_t = max(tat_t, ready) + cost_t
    after = replace(
        bucket,
        tat_requests=tat_r,
        tat_tokens=tat_t,
        blocked_until=blocked,
        limited_since=limited_since,
    )
    lease = Lease(
        requests=ask.requests if granted else 0,
        tokens=ask.tokens if granted else 0,
        ready_at=ready,
        wait_s=max(0.0, ready - now),
        limited_since=limited_since,
        rpm=rpm,
        tpm=tpm,
        source=source,
    )
    return after, lease
