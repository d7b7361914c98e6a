"""Attempt history on a real 3-node Redis Cluster: written by each queue's scripts in its slot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis_servers import Fleet, start_cluster

from conveyor.brokers.redis import RedisBroker
from conveyor.message import TaskMessage, TaskState

pytestmark = [pytest.mark.process, pytest.mark.redis]


async def test_history_is_kept_and_deleted_per_queue_across_slots(tmp_path: Path) -> None:
    with Fleet() as fleet:
        addresses = await asyncio.to_thread(start_cluster, fleet, tmp_path)
        broker = RedisBroker.from_url(f"redis+cluster://{addresses[0]},{addresses[1]}?namespace=h")
        try:
            queues = [f"q{i}" for i in range(4)]  # spread over the nodes' slots
            for q in queues:
                await broker.enqueue([TaskMessage(id=f"{q}-t", type="t", queue=q, max_retry=1)])
            for attempt in (1, 2):
                leases = await broker.claim(queues, limit=4, lease_s=30)
                assert len(leases) == 4
                for lease in leases:
                    if attempt == 1:
                        await broker.retry(lease, error=f"boom {lease.task.queue}", delay_s=0)
                    else:
                        await broker.archive(lease, error="dead")

            for q in queues:
                records = await broker.load_history(q, f"{q}-t")
                assert [(r.attempt, r.error) for r in records] == [(1, f"boom {q}"), (2, "dead")]
            assert await broker.delete_tasks("q0", TaskState.ARCHIVED) == 1
            assert await broker.load_history("q0", "q0-t") == ()
            assert len(await broker.load_history("q1", "q1-t")) == 2
        finally:
            await broker.close()
