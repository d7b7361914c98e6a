"""complete_all on Redis Cluster: one script, so one slot, so one queue."""

from __future__ import annotations

import pytest
from redis_servers import namespaced_broker

from conveyor.brokers.atomic import CrossSlotError
from conveyor.message import Completion, TaskMessage, TaskState

pytestmark = pytest.mark.redis


async def test_cluster_refuses_a_call_spanning_queues_before_writing(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        redis_broker._cluster = True  # the Cluster checks, on a standalone server
        await redis_broker.enqueue([TaskMessage(id=f"t{i}", type="t", queue="a") for i in range(2)])
        leases = await redis_broker.claim(["a"], limit=2, lease_s=30)
        other = TaskMessage(id="n", type="t", queue="b")

        with pytest.raises(CrossSlotError, match="one queue"):
            await redis_broker.complete_all(
                [Completion(lease=leases[0], successors=(other,)), Completion(lease=leases[1])]
            )
        assert {t.id for t in await redis_broker.list_tasks("a", TaskState.ACTIVE)} == {"t0", "t1"}

        same = TaskMessage(id="n", type="t", queue="a")
        done = await redis_broker.complete_all(
            [Completion(lease=leases[0], successors=(same,)), Completion(lease=leases[1])]
        )
        assert done is True
        assert [t.id for t in await redis_broker.list_tasks("a", TaskState.PENDING)] == ["n"]


async def test_cluster_refuses_an_enqueue_all_spanning_queues(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        redis_broker._cluster = True
        spread = [TaskMessage(id="x", type="t", queue=q) for q in ("a", "b")]

        with pytest.raises(CrossSlotError):
            await redis_broker.enqueue_all(spread)
        assert await redis_broker.list_queues() == []
