"""A worker whose Redis connections are cut or go silent carries on by itself once healed.

The worker reaches Redis through a :class:`~faultproxy.FaultProxy`; the test's own checks go
straight to Redis. Nothing acknowledged may be lost, and the worker must not stay idle after
the network heals (an up-but-idle worker after a reconnect is a classic queue bug).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from conveyor import Task, TaskState
from conveyor.brokers.redis import RedisBroker
from conveyor.message import TaskMessage
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from faultproxy import FaultProxy
from support import eventually
from worker.harness import fast, serving

pytestmark = pytest.mark.timeout(90)

TASKS = 120


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
async def test_worker_resumes_after_the_network_heals(
    fault: str, redis_url: str, proxy: FaultProxy, direct: tuple[RedisBroker, str]
) -> None:
    broker, namespace = direct
    db = urlsplit(redis_url).path or "/0"
    through_proxy = f"redis://127.0.0.1:{proxy.port}{db}?namespace={namespace}"
    done: set[str] = set()

    async def handler(ctx: TaskContext, task: Task) -> None:
        await asyncio.sleep(0.002)
        done.add(ctx.task_id)

    async def completed() -> int:
        return (await broker.queue_stats("default")).completed

    messages = [
        TaskMessage(id=f"n{i}", type="job", queue="default", payload=b"{}", retention_s=600)
        for i in range(TASKS)
    ]
    server = Server(through_proxy, **fast(lease=2.0, recover_interval=0.2, poll_interval=0.2))
    async with serving(server, handler):
        await broker.enqueue(messages[: TASKS // 2])
        await eventually(lambda: _at_least(completed, 10), within=20)
        before = proxy.connections
        if fault == "reset":
            proxy.reset()
        else:
            proxy.blackhole(True)
            # The fault's duration: the worker's commands stall, its leases lapse meanwhile.
            await asyncio.sleep(2.5)
            proxy.blackhole(False)
        await broker.enqueue(messages[TASKS // 2 :])  # work that arrives after the fault
        await eventually(lambda: _at_least(completed, TASKS), within=60)
        assert proxy.connections > before  # it did reconnect: the fault reached the worker
    stats = await broker.queue_stats("default")
    assert (stats.pending, stats.active, stats.retry, stats.archived) == (0, 0, 0, 0)
    assert done == {m.id for m in messages}
    for m in messages[:3]:
        assert (await broker.get_task("default", m.id)).state is TaskState.COMPLETED


async def _at_least(count: object, n: int) -> bool:
    assert callable(count)
    return bool(await count() >= n)
