"""The emulator's SQS pollers scale as Lambda's do: 5 batches at first, 300 more a minute while
messages remain, never past MaximumConcurrency, and back down once the queue is found empty.

The ramp runs on a clock the tests move by hand, so what is checked is the rule, not timing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from aws.local.resources import LocalStack
from aws.local.sqs_event_source import EventSourceConfig, PollerScaling, SqsEventSource
from tests.support import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_starts_at_five_batches_and_adds_five_a_second_while_messages_remain() -> None:
    clock = Clock()
    scaling = PollerScaling(maximum=50, clock=clock)
    assert scaling.limit() == 5
    clock.now += 60
    assert scaling.limit() == 5  # no message found yet: an idle queue does not scale up
    scaling.found_messages()
    clock.now += 1
    assert scaling.limit() == 10  # 300 a minute
    scaling.found_messages()  # still messages: the same ramp goes on, it does not restart
    clock.now += 3.5
    assert scaling.limit() == 27
    clock.now += 60
    assert scaling.limit() == 50  # never past MaximumConcurrency


def test_a_maximum_below_five_is_where_it_starts_and_stays() -> None:
    clock = Clock()
    scaling = PollerScaling(maximum=4, clock=clock)
    scaling.found_messages()
    clock.now += 60
    assert scaling.limit() == 4


def test_an_empty_queue_brings_it_back_to_the_batches_in_flight_and_at_least_five() -> None:
    clock = Clock()
    scaling = PollerScaling(maximum=50, clock=clock)
    scaling.found_messages()
    clock.now += 10
    assert scaling.limit() == 50
    scaling.found_empty(in_flight=20)
    clock.now += 60
    assert scaling.limit() == 20  # the batches still running keep their places
    scaling.found_empty(in_flight=2)
    assert scaling.limit() == 5
    scaling.found_messages()  # a new ramp, from there
    clock.now += 2
    assert scaling.limit() == 15


def test_the_pollers_take_no_more_batches_than_the_scaling_allows(
    stack: LocalStack, sqs: Any
) -> None:
    for i in range(30):
        sqs.send_message(QueueUrl=stack.queue_url, MessageBody=f"message {i}")
    release = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        release.wait(30)
        return {"batchItemFailures": []}

    clock = Clock()
    config = EventSourceConfig(batch_size=1, max_concurrency=8)
    source = SqsEventSource(
        sqs, stack.queue_url, handler, config, scaling=PollerScaling(8, clock=clock)
    )
    source.start()
    try:
        wait_for(lambda: source.stats.in_flight_now == 5, timeout=10)
        time.sleep(0.5)  # the clock stands still: the pollers keep to 5 however long they wait
        assert source.stats.invocations == 5
        clock.now += 1  # a second of messages found: up to 10, but MaximumConcurrency is 8
        wait_for(lambda: source.stats.in_flight_now == 8, timeout=10)
        assert source.snapshot()["scaled_to"] == 8
        release.set()
        wait_for(lambda: source.stats.deleted == 30, timeout=20)
        wait_for(lambda: source.snapshot()["scaled_to"] == 5, timeout=10)  # the queue is empty
        assert source.stats.max_in_flight == 8
    finally:
        release.set()
        source.stop()
