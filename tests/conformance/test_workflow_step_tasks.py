"""A workflow step's task ends like a plain task: its result waiters wake, its slot frees.

``settle_step`` completes the step's task in the same atomic step as its workflow's advance; what
a plain completion does beside recording the result (waking a ``client.wait`` on the task,
freeing its queue's concurrency slot for an idle worker) must happen there too.
"""

from __future__ import annotations

import asyncio

import pytest

from conformance.factories import QUEUE
from conveyor import App, AsyncClient, chain, group
from conveyor.brokers.limits import FlowControl
from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.protocol import Broker
from conveyor.brokers.redis import RedisBroker, keys
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.brokers.workflows import StepOutcome
from conveyor.workflows.running import workflows_of
from support import eventually

pytestmark = pytest.mark.parametrize(
    "broker", ["memory", "sqlite", "redis", "redis-acl"], indirect=True
)


def _app(broker: Broker) -> App:
    app = App(broker)

    @app.task(name="add", max_retry=0)
    def add(a: int, b: int) -> int:
        return a + b

    return app


async def _interest(broker: Broker, task_id: str) -> bool:
    """Whether the broker knows a call waits on the task (each backend's own record of it)."""
    if isinstance(broker, MemoryBroker):
        return (QUEUE, task_id) in broker._state.result_waiters
    if isinstance(broker, RedisBroker):
        record = keys.task(broker._ns, QUEUE, task_id)
        return await broker._client.hget(record, "waited") is not None
    assert isinstance(broker, SqliteBroker)

    def rows(store: object) -> bool:
        query = "SELECT 1 FROM result_waits WHERE task_id = ?"
        return store.conn.execute(query, (task_id,)).fetchone() is not None  # type: ignore[attr-defined]

    return await broker._run(rows)


async def test_a_wait_on_a_steps_task_is_woken_by_its_settlement(broker: Broker) -> None:
    app = _app(broker)
    add = app.tasks["add"]
    info = await app.aenqueue_workflow(chain(add.s(1, 1).options(retention=600), add.s(2)))
    task = await broker.get_task(QUEUE, info.steps[0].task_id)
    waiter = asyncio.create_task(AsyncClient(broker).wait(task, 60))

    async def registered() -> bool:
        return await _interest(broker, task.id)

    await eventually(registered)
    [lease] = await broker.claim([QUEUE], limit=1, lease_s=30)
    assert lease.task.id == task.id
    if isinstance(broker, RedisBroker):
        # The waiter's flag makes the settlement push a wake token, as complete.lua does.
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        await broker._client.hset(keys.task(broker._ns, QUEUE, task.id), "waited", "1")
    assert await workflows_of(broker).settle_step(lease, StepOutcome(succeeded=True, result=b"2"))
    if isinstance(broker, RedisBroker):
        assert await broker._client.llen(keys.result_wake(broker._ns, QUEUE, task.id)) == 1
        waiter = asyncio.create_task(AsyncClient(broker).wait(task, 60))
    assert await asyncio.wait_for(waiter, 30) == 2


async def test_a_steps_settlement_frees_its_queues_concurrency_slot(broker: Broker) -> None:
    app = _app(broker)
    add = app.tasks["add"]
    assert isinstance(broker, FlowControl)
    await broker.set_queue_concurrency(QUEUE, 1)
    await app.aenqueue_workflow(group(add.s(1, 1), add.s(2, 2)))
    [lease] = await broker.claim([QUEUE], limit=10, lease_s=30)
    # The other member is pending, its queue at its limit: an idle worker sleeps...
    idle = asyncio.create_task(broker.wait_for_tasks([QUEUE], 60))
    done, _ = await asyncio.wait({idle}, timeout=0.1)
    assert not done
    # ...until the claimed member's settlement frees the slot (nothing else is enqueued).
    assert await workflows_of(broker).settle_step(lease, StepOutcome(succeeded=True, result=b"2"))
    done, _ = await asyncio.wait({idle}, timeout=30)
    assert done
    [second] = await broker.claim([QUEUE], limit=10, lease_s=30)
    assert second.task.id != lease.task.id
