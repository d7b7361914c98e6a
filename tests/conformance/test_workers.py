"""The worker registry and cancel requests (conveyor.brokers.workers), on every broker."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from conformance.factories import QUEUE, claim_one, enqueue_one, is_utc
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workers import WorkerInfo, WorkerRegistry
from conveyor.errors import TaskNotActiveError, TaskNotFoundError
from conveyor.message import TaskState
from support import eventually


def registry(broker: Broker) -> WorkerRegistry:
    assert isinstance(broker, WorkerRegistry)
    return broker


def worker(worker_id: str = "host:1:abc", **overrides: object) -> WorkerInfo:
    fields: dict[str, object] = {
        "id": worker_id,
        "host": "host",
        "pid": 1,
        "queues": {"critical": 6, "default": 3},
        "concurrency": 10,
        "active": ("t1", "t2"),
        "started_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "version": "1.2.3",
    }
    fields.update(overrides)
    return WorkerInfo(**fields)  # type: ignore[arg-type]


async def test_registered_worker_is_listed_with_every_field(broker: Broker) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    await registry(broker).register_worker(worker(), ttl_s=30)

    [listed] = await registry(broker).list_workers()

    expected = worker()
    assert dataclasses.replace(listed, last_heartbeat=expected.last_heartbeat) == expected
    assert is_utc(listed.last_heartbeat)
    assert before <= listed.last_heartbeat <= datetime.now(UTC) + timedelta(seconds=5)


async def test_refresh_replaces_the_record(broker: Broker) -> None:
    reg = registry(broker)
    await reg.register_worker(worker(active=("a",)), ttl_s=30)
    await reg.register_worker(worker(active=()), ttl_s=30)
    await reg.register_worker(worker("host:2:def"), ttl_s=30)

    listed = await reg.list_workers()

    assert [(w.id, w.active) for w in listed] == [("host:1:abc", ()), ("host:2:def", ("t1", "t2"))]


async def test_unregistered_worker_is_gone(broker: Broker) -> None:
    reg = registry(broker)
    await reg.register_worker(worker(), ttl_s=30)
    await reg.register_worker(worker("other"), ttl_s=30)

    await reg.unregister_worker("host:1:abc")
    await reg.unregister_worker("never-registered")

    assert [w.id for w in await reg.list_workers()] == ["other"]


async def test_a_record_not_refreshed_lapses(broker: Broker) -> None:
    reg = registry(broker)
    await reg.register_worker(worker("short"), ttl_s=0.05)
    await reg.register_worker(worker("long"), ttl_s=60)

    async def only_long() -> bool:
        return [w.id for w in await reg.list_workers()] == ["long"]

    await eventually(only_long, within=5.0)


async def test_cancel_request_marks_the_current_attempt(broker: Broker) -> None:
    reg = registry(broker)
    await enqueue_one(broker)
    await enqueue_one(broker)
    first = await claim_one(broker)
    second = await claim_one(broker)

    await reg.request_cancel(QUEUE, first.task.id)
    await reg.request_cancel(QUEUE, first.task.id)  # asking twice is asking once

    assert await reg.cancel_requested([first, second]) == [True, False]
    assert await reg.cancel_requested([]) == []
    assert (await broker.get_task(QUEUE, first.task.id)).state is TaskState.ACTIVE


async def test_cancel_request_does_not_reach_a_later_attempt(broker: Broker) -> None:
    reg = registry(broker)
    await enqueue_one(broker, max_retry=3)
    lease = await claim_one(broker)
    await reg.request_cancel(QUEUE, lease.task.id)

    await broker.retry(lease, error="boom", delay_s=0)
    again = await claim_one(broker)

    assert again.token != lease.token
    assert await reg.cancel_requested([again]) == [False]


async def test_cancel_of_a_task_not_active_is_refused(broker: Broker) -> None:
    reg = registry(broker)
    info = await enqueue_one(broker)

    with pytest.raises(TaskNotActiveError) as caught:
        await reg.request_cancel(QUEUE, info.id)

    assert (caught.value.task_id, caught.value.queue, caught.value.state) == (
        info.id,
        QUEUE,
        "pending",
    )
    lease = await claim_one(broker)
    assert await reg.cancel_requested([lease]) == [False]  # nothing was stored


async def test_cancel_of_an_unknown_task_is_not_found(broker: Broker) -> None:
    with pytest.raises(TaskNotFoundError) as caught:
        await registry(broker).request_cancel(QUEUE, "no-such-task")

    assert (caught.value.task_id, caught.value.queue) == ("no-such-task", QUEUE)


async def test_requests_of_ended_attempts_are_dropped(broker: Broker) -> None:
    reg = registry(broker)
    await enqueue_one(broker)
    await enqueue_one(broker)
    ended = await claim_one(broker)
    await reg.request_cancel(QUEUE, ended.task.id)
    await broker.archive(ended, error="cancelled")
    running = await claim_one(broker)

    await reg.request_cancel(QUEUE, running.task.id)

    assert await reg.cancel_requested([ended, running]) == [False, True]


async def test_delete_queue_forgets_its_cancel_requests(broker: Broker) -> None:
    reg = registry(broker)
    await enqueue_one(broker)
    lease = await claim_one(broker)
    await reg.request_cancel(QUEUE, lease.task.id)
    await broker.archive(lease, error="cancelled")

    await broker.delete_queue(QUEUE, force=True)

    assert await reg.cancel_requested([lease]) == [False]
