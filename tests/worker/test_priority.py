"""Queue priority: strict order, seeded weighted order, paused queues, no starvation."""

from __future__ import annotations

import random
from collections import Counter

from conveyor.brokers.protocol import Broker
from conveyor.message import JSONValue, Task
from conveyor.worker.context import TaskContext
from conveyor.worker.fetcher import QueueSelector
from conveyor.worker.server import Server
from support import eventually
from worker.harness import enqueue, fast, serving


def test_strict_selector_puts_the_heaviest_queue_first() -> None:
    selector = QueueSelector([("low", 1), ("critical", 6), ("default", 3)], strict=True)
    assert selector.order() == ["critical", "default", "low"]
    assert selector.names == ["low", "critical", "default"]


def test_weighted_selector_leads_with_each_queue_in_proportion_to_its_weight() -> None:
    selector = QueueSelector([("a", 6), ("b", 3), ("c", 1)], rng=random.Random(42))
    draws = 20_000
    orders = [selector.order() for _ in range(draws)]
    firsts = Counter(order[0] for order in orders)
    assert all(sorted(order) == ["a", "b", "c"] for order in orders)
    assert abs(firsts["a"] / draws - 0.6) < 0.02
    assert abs(firsts["b"] / draws - 0.3) < 0.02
    assert abs(firsts["c"] / draws - 0.1) < 0.02


def test_equal_weights_shuffle_every_queue_to_the_front() -> None:
    selector = QueueSelector([("x", 1), ("y", 1), ("z", 1)], rng=random.Random(1))
    firsts = Counter(selector.order()[0] for _ in range(3000))
    assert set(firsts) == {"x", "y", "z"}
    assert min(firsts.values()) > 800


async def test_strict_priority_drains_the_heavier_queue_first(broker: Broker) -> None:
    order: list[str] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        order.append(ctx.queue)
        return None

    for _ in range(5):
        await enqueue(broker, queue="low")
    for _ in range(5):
        await enqueue(broker, queue="high")
    server = Server(
        broker, **fast(concurrency=1, queues={"low": 1, "high": 5}, strict_priority=True)
    )
    async with serving(server, handler):

        async def drained() -> bool:
            return len(order) == 10

        await eventually(drained)
    assert order == ["high"] * 5 + ["low"] * 5


async def test_weighted_priority_serves_every_queue(broker: Broker) -> None:
    counts: Counter[str] = Counter()

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        counts[ctx.queue] += 1
        return None

    for queue in ("heavy", "light"):
        for _ in range(10):
            await enqueue(broker, queue=queue)
    async with serving(Server(broker, **fast(queues={"heavy": 9, "light": 1})), handler):

        async def drained() -> bool:
            return sum(counts.values()) == 20

        await eventually(drained)
    assert counts == {"heavy": 10, "light": 10}


async def test_paused_queue_is_skipped_until_unpaused(broker: Broker) -> None:
    seen: list[str] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        seen.append(ctx.queue)
        return None

    await broker.pause_queue("held")
    await enqueue(broker, queue="held")
    server = Server(broker, **fast(queues=["held", "open"]))
    async with serving(server, handler):
        await enqueue(broker, queue="open")

        async def open_done() -> bool:
            return seen == ["open"]

        await eventually(open_done)
        assert (await broker.queue_stats("held")).pending == 1
        await broker.unpause_queue("held")

        async def held_done() -> bool:
            return seen == ["open", "held"]

        await eventually(held_done)
