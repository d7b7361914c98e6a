"""The worker registry and cancel requests on a real 3-node Redis Cluster (their keys' slots)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis_servers import Fleet, start_cluster

from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.workers import WorkerInfo
from conveyor.errors import TaskNotActiveError
from conveyor.message import TaskMessage

pytestmark = [pytest.mark.process, pytest.mark.redis]


async def test_registry_and_cancels_work_across_cluster_slots(tmp_path: Path) -> None:
    with Fleet() as fleet:
        addresses = await asyncio.to_thread(start_cluster, fleet, tmp_path)
        broker = RedisBroker.from_url(f"redis+cluster://{addresses[0]},{addresses[1]}?namespace=w")
        try:
            worker = WorkerInfo(
                id="h:1:a",
                host="h",
                pid=1,
                queues={"q0": 1, "q1": 1},
                concurrency=2,
                started_at=datetime.now(UTC),
            )
            await broker.register_worker(worker, ttl_s=30)
            assert [w.id for w in await broker.list_workers()] == ["h:1:a"]

            queues = [f"q{i}" for i in range(4)]
            await broker.enqueue([TaskMessage(id=f"{q}-t", type="t", queue=q) for q in queues])
            leases = await broker.claim(queues[:3], limit=3, lease_s=30)
            await broker.request_cancel("q0", "q0-t")
            await broker.request_cancel("q2", "q2-t")
            with pytest.raises(TaskNotActiveError):
                await broker.request_cancel("q3", "q3-t")
            assert await broker.cancel_requested(leases) == [True, False, True]

            await broker.unregister_worker("h:1:a")
            assert await broker.list_workers() == []
        finally:
            await broker.close()
