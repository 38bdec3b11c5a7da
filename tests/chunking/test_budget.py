"""chunking.budget: what a lease of a model's shared budget grants, and how the provider's
word (usage, headers, 429s) corrects it."""

from __future__ import annotations

import itertools
import math

from chunking.budget import (
    PROBE_CUT,
    PROBE_GROWTH,
    PROBE_SLOW_START,
    PROBE_START_RPM,
    Bucket,
    Lease,
    LeaseAsk,
    Limits,
    Observation,
    take,
)

BURST = 0.5
T0 = 1_000_000.0


def leases(limits: Limits, asks: list[LeaseAsk], now: float = T0) -> tuple[Bucket, list[Lease]]:
    bucket: Bucket | None = None
    granted = []
    for ask in asks:
        bucket, lease = take(bucket, ask, limits, now, BURST)
        granted.append(lease)
    assert bucket is not None
    return bucket, granted


def test_requests_are_granted_at_the_rate_after_the_burst() -> None:
    _, granted = leases(Limits(rpm=600), [LeaseAsk(requests=1)] * 20)  # 10 a second
    ready = [lease.ready_at - T0 for lease in granted]
    assert ready[:5] == [0.0] * 5  # half a second's worth at once
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(ready[5:])]
    assert gaps == [0.1] * len(gaps)
    assert all(lease.requests == 1 for lease in granted)


def test_a_token_limit_binds_before_the_request_limit() -> None:
    # 600 tokens a second, 300 a request (the burst's worth): 2 a second, though 60 rps allow.
    _, granted = leases(Limits(rpm=3_600, tpm=36_000), [LeaseAsk(requests=1, tokens=300)] * 6)
    ready = [round(lease.ready_at - T0, 6) for lease in granted]
    assert ready == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_tokens_an_answer_did_not_use_are_given_back() -> None:
    ask = LeaseAsk(requests=1, tokens=600)
    bucket, _ = leases(Limits(tpm=36_000), [ask, ask, ask])
    _, late = take(bucket, ask, Limits(tpm=36_000), T0, BURST)
    # The same, told that the three answers used 100 tokens each, not 600.
    _, corrected = take(
        bucket, LeaseAsk(requests=1, tokens=600, token_correction=-1_500), Limits(tpm=36_000),
        T0, BURST,
    )  # fmt: skip
    assert corrected.ready_at < late.ready_at
    assert math.isclose(late.ready_at - corrected.ready_at, 1_500 / 600)


def test_the_provider_s_remaining_caps_the_bucket() -> None:
    # Our bucket is full, but the provider says only 1 request is left (another client uses
    # the same key): past that one, requests wait for the refill.
    seen = Observation(at=T0, remaining_requests=1)
    _, granted = leases(
        Limits(rpm=600), [LeaseAsk(requests=1, observation=seen)] + [LeaseAsk(requests=1)] * 2
    )
    assert [round(lease.ready_at - T0, 6) for lease in granted] == [0.0, 0.1, 0.2]


def test_the_announced_limit_is_used_when_none_is_configured_and_never_exceeded() -> None:
    seen = Observation(at=T0, limit_requests=1_200, limit_tokens=90_000)
    _, [lease] = leases(Limits(), [LeaseAsk(requests=1, observation=seen)])
    assert (lease.rpm, lease.tpm) == (1_200, 90_000)
    _, [lease] = leases(Limits(rpm=5_000), [LeaseAsk(requests=1, observation=seen)])
    assert (lease.rpm, lease.tpm) == (1_200, 90_000)  # configured higher than the provider's
    _, [lease] = leases(Limits(rpm=600), [LeaseAsk(requests=1, observation=seen)])
    assert lease.rpm == 600  # configured lower: a share of the account's limit, kept


def test_a_429_holds_every_lease_until_its_wait_ends_and_an_answer_lifts_it() -> None:
    bucket, [refused, after] = leases(
        Limits(rpm=6_000),
        [LeaseAsk(refused_for_s=3.0, refused_at=T0), LeaseAsk(requests=1)],
    )
    assert refused.requests == 0 and refused.limited_since == T0
    assert after.ready_at == T0 + 3.0 and after.limited_since == T0
    _, lifted = take(bucket, LeaseAsk(requests=1, answered=True), Limits(rpm=6_000), T0 + 4, BURST)
    assert lifted.limited_since is None


def test_nothing_is_granted_that_would_be_ready_too_late_and_the_bucket_does_not_move() -> None:
    bucket, _ = leases(Limits(rpm=60), [LeaseAsk(requests=1)])  # the next is 1 s away
    after, lease = take(bucket, LeaseAsk(requests=1, ready_by=T0 + 0.5), Limits(rpm=60), T0, BURST)
    assert lease.requests == 0 and lease.ready_at == T0 + 1.0
    assert after.tat_requests == bucket.tat_requests


def test_with_no_limit_known_the_rate_is_probed_up_while_used_and_cut_by_a_429() -> None:
    limits, now = Limits(), T0
    bucket, lease = take(None, LeaseAsk(requests=1), limits, now, BURST)
    assert lease.rpm == PROBE_START_RPM
    for _ in range(3):  # used up, a period apart: grown each time (slow start)
        now += 1.0
        bucket, lease = take(bucket, LeaseAsk(requests=200), limits, now, BURST)
    assert lease.rpm == PROBE_START_RPM * PROBE_SLOW_START**2
    refused = LeaseAsk(refused_for_s=1.0, refused_at=now)
    bucket, _ = take(bucket, refused, limits, now, BURST)
    assert bucket.probe_rpm == PROBE_START_RPM * PROBE_SLOW_START**2 / 2  # slow start ends: halved
    bucket, _ = take(bucket, refused, limits, now, BURST)
    assert bucket.probe_rpm == PROBE_START_RPM * PROBE_SLOW_START**2 / 2  # one cut, one overshoot
    # A period after the wait, a 429 of a request sent since cuts again (after growing by
    # PROBE_GROWTH for the quiet period, by PROBE_CUT).
    now += 3.0
    late = LeaseAsk(refused_for_s=1.0, refused_at=now, refused_sent_at=now)
    before = bucket.probe_rpm
    bucket, _ = take(bucket, late, limits, now, BURST)
    assert bucket.probe_rpm is not None and before is not None
    assert math.isclose(bucket.probe_rpm, before * PROBE_GROWTH * PROBE_CUT)
    # Unused, it does not grow: a rate never reached says nothing about the provider.
    idle, _ = take(bucket, LeaseAsk(answered=True), limits, now + 100, BURST)
    _, lease = take(idle, LeaseAsk(), limits, now + 200, BURST)
    assert lease.rpm == bucket.probe_rpm


def test_the_bucket_round_trips_as_json_and_ignores_fields_it_does_not_know() -> None:
    bucket, _ = leases(Limits(rpm=600), [LeaseAsk(requests=3)])
    assert Bucket.loads(bucket.dumps()) == bucket
    assert Bucket.loads('{"tat_requests": 5.0, "from_a_later_version": 1}') == Bucket(
        tat_requests=5.0
    )
