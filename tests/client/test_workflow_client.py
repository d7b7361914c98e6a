"""The client side of workflows: sync and async enqueue, waiting on results, the inspector."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor import (
    App,
    ConfigError,
    Inspector,
    ResultTimeoutError,
    SkipRetry,
    TaskFailedError,
    WorkflowNotFoundError,
    WorkflowState,
    chain,
)
from conveyor.brokers.memory import MemoryBroker
from conveyor.worker.server import Server
from worker.harness import fast, serving


@pytest.fixture
async def app() -> AsyncIterator[App]:
    broker = MemoryBroker()
    app = App(broker)

    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="fail", max_retry=0)
    def fail() -> None:
        raise SkipRetry("no")

    async with serving(Server(broker, **fast()), app.mux):
        yield app
    await app.aclose()


async def test_wait_on_a_retained_task(app: App) -> None:
    client = app.async_client
    info = await app.tasks["add"].options(retention=60).aio.enqueue(2, 3)
    assert await client.wait(info, 10) == 5
    dead = await app.tasks["fail"].options(retention=60).aio.enqueue()
    with pytest.raises(TaskFailedError) as failed:
        await client.wait(dead, 10)
    assert failed.value.task_id == dead.id and "no" in failed.value.error
    with pytest.raises(ConfigError):
        await client.wait(await app.tasks["add"].aio.enqueue(1, 1), 1)  # keeps no result


async def test_async_signature_enqueue_and_timeout(app: App) -> None:
    add = app.tasks["add"]
    info = await add.s(1, 1).aio.enqueue()
    assert await app.async_client.wait(info, 10) == 2
    await app.async_client.broker.pause_queue("default")
    paused = await app.aenqueue_workflow(add.s(5, 5))
    with pytest.raises(ResultTimeoutError):
        await app.async_client.wait(paused, 0.05)


def test_sync_client_and_inspector(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    app = App(url)

    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    info = add.s(1, 2).link(add.s(3)).enqueue()
    other = app.enqueue_workflow(chain(add.s(1, 2), add.s(3)))
    with Inspector(url) as inspector:
        assert inspector.get_workflow(info.id).state is WorkflowState.PENDING
        assert [w.id for w in inspector.list_workflows("pending")] == [other.id, info.id]
        assert [w.id for w in inspector.list_workflows(page=2, size=1)] == [info.id]
        assert inspector.cancel_workflow(info.id) is True
        assert inspector.cancel_workflow(info.id) is False
        assert inspector.get_workflow(info.id).state is WorkflowState.CANCELLED
        with pytest.raises(WorkflowNotFoundError):
            inspector.get_workflow("nope")
        with pytest.raises(ConfigError):
            inspector.list_workflows("sleeping")
    with pytest.raises(TaskFailedError):
        app.client.wait(info, 1)
    app.close()
