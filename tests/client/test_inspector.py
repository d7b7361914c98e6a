"""AsyncInspector and Inspector against real brokers."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import (
    AsyncClient,
    AsyncInspector,
    Broker,
    Client,
    ConfigError,
    Inspector,
    Task,
    TaskNotFoundError,
    TaskState,
)


async def test_queues_stats_and_listing(broker: Broker) -> None:
    async with AsyncClient(broker) as client, AsyncInspector(broker) as inspector:
        infos = await client.enqueue_many([Task("a.b", i) for i in range(5)], queue="q1")
        await client.enqueue_in(60, Task("a.b"), queue="q1")
        await client.enqueue(Task("a.b"), queue="q2")

        assert await inspector.queues() == ["q1", "q2"]
        stats = await inspector.queue_info("q1")
        assert (stats.pending, stats.scheduled, stats.size, stats.paused) == (5, 1, 6, False)

        first = await inspector.list_tasks("q1", TaskState.PENDING, page=1, size=2)
        second = await inspector.list_tasks("q1", "pending", page=2, size=2)
        last = await inspector.list_tasks("q1", TaskState.PENDING, page=3, size=2)
        assert [t.id for t in first + second + last] == [i.id for i in infos]
        assert await inspector.list_tasks("q1", TaskState.PENDING, page=4, size=2) == []
        assert (await inspector.get_task("q1", infos[0].id)).payload == 0
        with pytest.raises(TaskNotFoundError):
            await inspector.get_task("q1", "missing")


async def test_single_task_operations(broker: Broker) -> None:
    async with AsyncClient(broker) as client, AsyncInspector(broker) as inspector:
        waiting = await client.enqueue(Task("a.b", 1))
        later = await client.enqueue_in(3600, Task("a.b", 2))

        await inspector.archive_task("default", waiting.id)
        assert (await inspector.get_task("default", waiting.id)).state is TaskState.ARCHIVED
        await inspector.run_task("default", waiting.id)
        assert (await inspector.get_task("default", waiting.id)).state is TaskState.PENDING
        await inspector.run_task("default", later.id)
        assert (await inspector.get_task("default", later.id)).state is TaskState.PENDING
        await inspector.delete_task("default", later.id)
        with pytest.raises(TaskNotFoundError):
            await inspector.get_task("default", later.id)
        with pytest.raises(TaskNotFoundError):
            await inspector.run_task("default", waiting.id)  # pending: nothing to run


async def test_bulk_operations_and_pause(broker: Broker) -> None:
    async with AsyncClient(broker) as client, AsyncInspector(broker) as inspector:
        await client.enqueue_many([Task("a.b", i) for i in range(4)])
        assert await inspector.archive_all_tasks("default", TaskState.PENDING) == 4
        assert await inspector.run_all_tasks("default", "archived") == 4
        assert await inspector.archive_all_tasks("default", TaskState.PENDING) == 4
        assert await inspector.delete_all_tasks("default", TaskState.ARCHIVED) == 4
        assert (await inspector.queue_info("default")).size == 0

        await inspector.pause_queue("default")
        assert (await inspector.queue_info("default")).paused
        await inspector.unpause_queue("default")
        assert not (await inspector.queue_info("default")).paused


async def test_bad_arguments_are_rejected(broker: Broker) -> None:
    async with AsyncInspector(broker) as inspector:
        with pytest.raises(ConfigError, match="unknown task state"):
            await inspector.list_tasks("default", "finished")
        with pytest.raises(ConfigError, match="page"):
            await inspector.list_tasks("default", TaskState.PENDING, page=0)
        with pytest.raises(ConfigError, match="size"):
            await inspector.list_tasks("default", TaskState.PENDING, size=5000)
        with pytest.raises(ConfigError, match="queue"):
            await inspector.queue_info("no spaces allowed")
        assert (await inspector.describe()).backend in ("memory", "sqlite", "redis")


def test_sync_inspector_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with Client(url) as client:
        info = client.enqueue(Task("a.b", {"k": "v"}), queue="emails")
    with Inspector(url) as inspector:
        assert inspector.queues() == ["emails"]
        assert inspector.queue_info("emails").pending == 1
        assert [t.id for t in inspector.list_tasks("emails", "pending")] == [info.id]
        inspector.archive_task("emails", info.id)
        assert inspector.run_all_tasks("emails", TaskState.ARCHIVED) == 1
        inspector.pause_queue("emails")
        assert inspector.queue_info("emails").paused
        inspector.unpause_queue("emails")
        assert inspector.delete_all_tasks("emails", TaskState.PENDING) == 1
        assert inspector.archive_all_tasks("emails", TaskState.PENDING) == 0
        assert inspector.describe().backend == "sqlite"
        with pytest.raises(TaskNotFoundError):
            inspector.delete_task("emails", info.id)
