"""Redis flow control: queue limits in each queue's Cluster slot, rate limits set elsewhere, and
the running counts of type concurrency limits (type limits on Cluster:
test_redis_cluster_limits.py)."""

from __future__ import annotations

import pytest
from redis_servers import namespaced_broker

from conveyor.brokers.limits import FlowControl, QueueLimit, Rate
from conveyor.brokers.protocol import Broker
from conveyor.brokers.redis import RedisBroker, keys
from conveyor.brokers.redis import limits as redis_limits
from conveyor.errors import QueueFullError
from conveyor.message import Completion, TaskMessage, TaskState
from support import eventually


def flow(broker: Broker) -> FlowControl:
    assert isinstance(broker, FlowControl)
    return broker


def _messages(queue: str, n: int, task_type: str = "t") -> list[TaskMessage]:
    return [
        TaskMessage(id=f"{queue}-{task_type}-{i}", type=task_type, queue=queue) for i in range(n)
    ]


async def test_cluster_queue_limits_live_in_each_queues_slot(cluster_broker: Broker) -> None:
    # Type limits on Cluster: test_redis_cluster_limits.py.
    broker = cluster_broker
    await flow(broker).set_queue_limit("q0", QueueLimit(max_length=2))
    await flow(broker).set_queue_limit("q1", QueueLimit(max_length=2, overflow="drop_oldest"))
    await broker.enqueue(_messages("q0", 2) + _messages("q1", 2))
    with pytest.raises(QueueFullError):
        await broker.enqueue(_messages("q0", 1, "late"))
    await broker.enqueue(_messages("q1", 1, "late"))
    assert (await broker.get_task("q1", "q1-t-0")).state is TaskState.ARCHIVED
    assert (await broker.queue_stats("q1")).pending == 2


async def test_a_rate_limit_set_elsewhere_is_seen_after_the_refresh(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with namespaced_broker(redis_url) as worker:
        other = RedisBroker.from_url(f"{redis_url}?namespace={worker._ns}")
        # Refresh at every claim (instead of once a second), so the test need not wait.
        monkeypatch.setattr(redis_limits, "RATE_REFRESH_S", 0.0)
        try:
            await worker.enqueue(_messages("default", 1, "api"))
            assert len(await worker.claim(["default"], limit=5, lease_s=30)) == 1  # none yet
            await other.set_rate_limit("api", Rate(1, 3600.0))
            await worker.enqueue([TaskMessage(id=f"n{i}", type="api") for i in range(3)])

            leases = await worker.claim(["default"], limit=5, lease_s=30)

            assert len(leases) == 1  # the bucket's one token
            assert (await worker.queue_stats("default")).scheduled == 2
        finally:
            await other.close()


async def _running(broker: RedisBroker, task_type: str) -> int:
    return int(await broker._client.get(keys.running_prefix(broker._ns) + task_type) or 0)


async def test_every_way_out_of_active_gives_the_slot_back(redis_url: str) -> None:
    # A claim reads the type's running count: each way out takes its task off, once.
    async with namespaced_broker(redis_url) as broker:
        await broker.set_task_concurrency("api", 10)
        await broker.enqueue([TaskMessage(id=f"a{i}", type="api", max_retry=5) for i in range(5)])
        leases = await broker.claim(["default"], limit=4, lease_s=30)
        lapsing = await broker.claim(["default"], limit=1, lease_s=0.05)
        assert await _running(broker, "api") == 5

        await broker.complete([Completion(lease=leases[0])])
        await broker.retry(leases[1], error="boom", delay_s=3600)
        await broker.archive(leases[2], error="boom")
        await broker.release(leases[3])
        await broker.complete([Completion(lease=leases[0])])  # a second completion: refused
        assert await _running(broker, "api") == 1

        async def recovered() -> int:  # once the short lease lapses
            return await broker.recover_expired(delay_s=3600, max_crashes=5)

        assert await eventually(recovered, within=3.0) == 1
        assert (await broker.get_task("default", lapsing[0].task.id)).state is TaskState.RETRY
        assert await _running(broker, "api") == 0


async def test_a_running_task_archived_as_corrupt_gives_its_slot_back(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        await broker.set_task_concurrency("api", 1)
        await broker.enqueue([TaskMessage(id="a", type="api"), TaskMessage(id="b", type="api")])
        [lease] = await broker.claim(["default"], limit=5, lease_s=0.05)
        task_prefix = keys.queue_keys(broker._ns, "default").task_prefix
        await broker._client.hset(task_prefix + "a", "crashes", "many")  # damaged while it ran

        async def recovered() -> int:
            return await broker.recover_expired(delay_s=3600, max_crashes=5)

        assert await eventually(recovered, within=3.0) == 1
        assert (await broker.get_task("default", "a")).state is TaskState.ARCHIVED
        assert await _running(broker, "api") == 0
        assert lease.task.id == "a"
        await broker.run_task("default", "b")  # held for the slot: due now
        assert [le.task.id for le in await broker.claim(["default"], limit=5, lease_s=30)] == ["b"]


async def test_a_bucket_keeps_one_entry_per_claim_and_its_count_of_tokens_out(
    redis_url: str,
) -> None:
    async with namespaced_broker(redis_url) as broker:
        bucket = keys.bucket_prefix(broker._ns) + "api"
        out = keys.bucket_out_prefix(broker._ns) + "api"
        await broker.set_rate_limit("api", Rate(5, 3600.0))
        await broker.enqueue(_messages("default", 8, "api"))
        assert len(await broker.claim(["default"], limit=2, lease_s=30)) == 2
        assert len(await broker.claim(["default"], limit=1, lease_s=30)) == 1
        assert await broker._client.zcard(bucket) == 2  # one entry per claim
        assert await broker._client.get(out) == b"3"

        await broker._client.delete(out)  # a lost count is counted again from the entries
        assert len(await broker.claim(["default"], limit=8, lease_s=30)) == 2

        assert await broker._client.get(out) == b"5"
        assert (await broker.queue_stats("default")).scheduled == 3
        await broker.set_rate_limit("api", None)
        assert await broker._client.exists(bucket, out) == 0


async def test_a_record_naming_another_key_as_its_count_leaves_that_key_alone(
    redis_url: str,
) -> None:
    async with namespaced_broker(redis_url) as broker:
        await broker.set_task_concurrency("api", 5)
        await broker.enqueue(_messages("default", 2, "api"))
        leases = await broker.claim(["default"], limit=2, lease_s=30)
        task_prefix = keys.queue_keys(broker._ns, "default").task_prefix
        outside = f"elsewhere-{broker._ns}"
        await broker._client.set(outside, 7)
        try:
            for lease in leases:  # records edited by hand: a count outside the namespace
                await broker._client.hset(task_prefix + lease.task.id, "run", outside)

            await broker.complete([Completion(lease=leases[0])])
            await broker.retry(leases[1], error="boom", delay_s=3600)

            assert await broker._client.get(outside) == b"7"
        finally:
            await broker._client.delete(outside)
