"""``client.wait`` on a plain retained task, on every broker: woken by the task's end."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import AsyncClient, ResultTimeoutError, TaskFailedError
from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.protocol import Broker
from conveyor.brokers.redis import RedisBroker, keys
from conveyor.brokers.results import ResultWaitBroker
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.message import Completion, TaskMessage, TaskState
from support import eventually

pytestmark = pytest.mark.parametrize(
    "broker", ["memory", "sqlite", "redis", "redis-acl"], indirect=True
)


def _message(task_id: str) -> TaskMessage:
    return TaskMessage(id=task_id, type="t", queue="results", retention_s=3600.0)


async def _waiting(broker: Broker, task_id: str, timeout: float) -> asyncio.Task[object]:
    """A client.wait in the background, its interest registered (the waiter is asleep)."""
    [info] = await broker.enqueue([_message(task_id)])
    waiter = asyncio.create_task(AsyncClient(broker).wait(info, timeout))

    async def registered() -> bool:
        return await _interest(broker, task_id)

    await eventually(registered)  # the waiter told the broker; it is asleep or about to be
    assert not waiter.done()
    return waiter


async def _interest(broker: Broker, task_id: str) -> bool:
    """Whether the broker knows a call waits on the task (each backend's own record of it)."""
    if isinstance(broker, MemoryBroker):
        return ("results", task_id) in broker._state.result_waiters
    if isinstance(broker, RedisBroker):
        record = keys.task(broker._ns, "results", task_id)
        return await broker._client.hget(record, "waited") is not None
    assert isinstance(broker, SqliteBroker)

    def rows(store: object) -> bool:
        query = "SELECT 1 FROM result_waits WHERE task_id = ?"
        return store.conn.execute(query, (task_id,)).fetchone() is not None  # type: ignore[attr-defined]

    return await broker._run(rows)


async def test_wait_is_woken_by_the_completion(broker: Broker) -> None:
    assert isinstance(broker, ResultWaitBroker)
    waiter = await _waiting(broker, "done-1", timeout=60)
    [lease] = await broker.claim(["results"], limit=1, lease_s=30)
    assert await broker.complete([Completion(lease=lease, result=b'{"ok": 1}')]) == [True]
    # Far sooner than its 60 s timeout: it was woken (the wait's own re-reads are seconds apart
    # at most, so this would pass on them too, but never hang).
    assert await asyncio.wait_for(waiter, 30) == {"ok": 1}


async def test_wait_of_an_archived_task_raises_task_failed(broker: Broker) -> None:
    waiter = await _waiting(broker, "dead-1", timeout=60)
    [lease] = await broker.claim(["results"], limit=1, lease_s=30)
    await broker.archive(lease, error="it broke")
    with pytest.raises(TaskFailedError) as failed:
        await asyncio.wait_for(waiter, 30)
    assert (failed.value.task_id, failed.value.error) == ("dead-1", "it broke")


async def test_wait_times_out_and_leaves_the_task_alone(broker: Broker) -> None:
    [info] = await broker.enqueue([_message("slow-1")])
    with pytest.raises(ResultTimeoutError):
        await AsyncClient(broker).wait(info, 0.1)
    assert (await broker.get_task("results", "slow-1")).state is TaskState.PENDING
    [lease] = await broker.claim(["results"], limit=1, lease_s=30)
    assert await broker.complete([Completion(lease=lease, result=b"2")]) == [True]
    assert await AsyncClient(broker).wait(info, 5) == 2


async def test_a_cancelled_wait_ends_at_once(broker: Broker) -> None:
    # redis-py's asyncio client can swallow a cancellation that lands while a command is in
    # flight; the wait must end all the same, long before its own timeout. Several tries, so the
    # cancel lands at different points of the wait.
    for attempt in range(5):
        waiter = await _waiting(broker, f"cancelled-{attempt}", timeout=120)
        waiter.cancel()
        done, _ = await asyncio.wait({waiter}, timeout=30)
        assert done, "the cancelled wait went on"
        assert waiter.cancelled()
