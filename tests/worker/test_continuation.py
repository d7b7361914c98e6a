"""Eager continuation in the worker: which queues it asks for, and when it does not ask."""

from __future__ import annotations

from conveyor import App, chain
from conveyor.brokers.memory import MemoryBroker
from conveyor.worker.config import WorkerConfig
from conveyor.worker.executor import continue_on
from conveyor.worker.server import Server
from worker.harness import fast, serving


def test_a_weighted_worker_continues_on_every_queue_it_serves() -> None:
    config = WorkerConfig(queues=(("a", 6), ("b", 3), ("c", 1)))
    assert continue_on(config) == frozenset({"a", "b", "c"})


def test_a_strict_worker_continues_on_its_top_queues_only() -> None:
    config = WorkerConfig(queues=(("low", 1), ("top", 5), ("also", 5)), strict_priority=True)
    assert continue_on(config) == frozenset({"top", "also"})


def _app(broker: MemoryBroker) -> App:
    app = App(broker)

    @app.task(name="add", queue="low", max_retry=0)
    def add(a: int, b: int) -> int:
        return a + b

    return app


async def test_a_strict_worker_claims_a_lower_queues_steps() -> None:
    broker = MemoryBroker()
    app = _app(broker)
    add = app.tasks["add"]
    server = Server(broker, queues={"high": 2, "low": 1}, strict_priority=True, **fast())
    async with serving(server, app.mux):
        info = await app.aenqueue_workflow(chain(add.s(0, 1), add.s(1), add.s(1)))
        assert await app.async_client.wait(info, 20) == 3
    # Every step on "low" went through a claim, which puts "high" first.
    assert server.stats.continued == 0
    assert server.stats.claimed == 3


async def test_a_weighted_worker_continues_on_a_lighter_queue() -> None:
    broker = MemoryBroker()
    app = _app(broker)
    add = app.tasks["add"]
    server = Server(broker, queues={"high": 2, "low": 1}, **fast())
    async with serving(server, app.mux):
        info = await app.aenqueue_workflow(chain(add.s(0, 1), add.s(1), add.s(1)))
        assert await app.async_client.wait(info, 20) == 3
    assert server.stats.continued == 2
    assert server.stats.claimed == 3
