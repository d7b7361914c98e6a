"""Flow control through a running Server: decorator limits reach the broker, held tasks run."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import App, Inspector
from conveyor.brokers.limits import FlowControl, Rate
from conveyor.brokers.protocol import Broker
from conveyor.errors import ConfigError
from conveyor.message import TaskState
from conveyor.worker.server import Server
from support import eventually
from worker.harness import enqueue, fast, serving, task_state


async def test_decorator_limits_are_written_when_the_app_is_served(broker: Broker) -> None:
    assert isinstance(broker, FlowControl)
    await broker.set_rate_limit("api", Rate(1, 3600.0))  # replaced by the code's limit
    await broker.set_rate_limit("raw", Rate(7, 1.0))  # not declared in code: kept
    app = App(broker)
    ran: list[int] = []

    @app.task(name="api", rate_limit="5/s")
    def api(n: int) -> None:
        ran.append(n)

    @app.task(name="plain", max_concurrency=2)
    def plain() -> None: ...

    messages = [await enqueue(broker, "api", {"n": n}, retention_s=60) for n in range(8)]
    async with serving(Server(broker, **fast()), app.mux):
        assert await broker.rate_limits() == {"api": Rate(5, 1.0), "raw": Rate(7, 1.0)}
        assert await broker.task_concurrency() == {"plain": 2}

        async def all_ran() -> bool:
            return len(ran) == len(messages)

        await eventually(all_ran, within=10.0)
    infos = [await task_state(broker, m) for m in messages]
    assert {i.state for i in infos} == {TaskState.COMPLETED}
    assert {i.retried for i in infos} == {0}  # held back, never failed
    assert (await broker.queue_stats("default")).failed_today == 0


async def test_a_held_back_type_does_not_hold_up_others(broker: Broker) -> None:
    assert isinstance(broker, FlowControl)
    await broker.set_rate_limit("slow", Rate(1, 3600.0))
    done: list[str] = []

    async def handler(ctx: object, task: object) -> None:
        done.append(getattr(task, "type", ""))

    limited = [await enqueue(broker, "slow") for _ in range(3)]
    others = [await enqueue(broker, "fast") for _ in range(5)]
    async with serving(Server(broker, **fast()), handler):

        async def others_done() -> bool:
            return done.count("fast") == len(others)

        await eventually(others_done)
    assert done.count("slow") == 1
    states = [(await task_state(broker, m)).state for m in limited[1:]]
    assert states == [TaskState.SCHEDULED, TaskState.SCHEDULED]


def test_inspector_sets_and_shows_limits(broker_url: str) -> None:
    with Inspector(broker_url) as inspector:
        assert inspector.queue_info("mail").max_length is None
        inspector.set_queue_limit("mail", 100, "drop_oldest")
        inspector.set_rate_limit("mail:send", "600/m")

        assert inspector.queue_info("mail").max_length == 100
        limit = inspector.queue_limit("mail")
        assert limit is not None and limit.overflow == "drop_oldest"
        assert inspector.rate_limits() == {"mail:send": Rate(600, 60.0)}

        inspector.set_queue_limit("mail", None)
        inspector.set_rate_limit("mail:send", None)
        assert inspector.queue_info("mail").max_length is None
        assert inspector.rate_limits() == {}

        inspector.set_task_concurrency("mail:send", 4)
        inspector.set_queue_concurrency("mail", 10)
        assert inspector.task_concurrency() == {"mail:send": 4}
        assert inspector.queue_concurrency("mail") == 10
        inspector.set_task_concurrency("mail:send", None)
        inspector.set_queue_concurrency("mail", None)
        assert (inspector.task_concurrency(), inspector.queue_concurrency("mail")) == ({}, None)


def test_bad_limits_fail_where_they_are_written(broker_url: str) -> None:
    app = App(broker_url)
    with pytest.raises(ConfigError, match="unit 'y'"):
        app.task(name="t", rate_limit="1/y")
    with pytest.raises(ConfigError, match="concurrency"):
        app.task(name="t", max_concurrency=0)
    with Inspector(broker_url) as inspector:
        with pytest.raises(ConfigError, match="count 'x'"):
            inspector.set_rate_limit("t", "x/s")
        with pytest.raises(ConfigError, match="overflow"):
            inspector.set_queue_limit("q", 5, "drop-oldest")
        with pytest.raises(ConfigError):
            inspector.set_queue_limit("q", -1)
        with pytest.raises(ConfigError):
            inspector.set_queue_concurrency("q", 0)
        assert inspector.queue_limit("q") is None


async def test_max_concurrency_holds_across_a_servers_slots(broker: Broker) -> None:
    app = App(broker)
    running: list[int] = []
    most = 0

    @app.task(name="capped", max_concurrency=2)
    async def capped(n: int) -> None:
        nonlocal most
        running.append(n)
        most = max(most, len(running))
        await asyncio.sleep(0.02)
        running.remove(n)

    messages = [await enqueue(broker, "capped", {"n": n}, retention_s=60) for n in range(10)]
    async with serving(Server(broker, **fast(concurrency=8)), app.mux):

        async def all_done() -> bool:
            states = {(await task_state(broker, m)).state for m in messages}
            return states == {TaskState.COMPLETED}

        await eventually(all_done, within=10.0)
    assert most == 2
