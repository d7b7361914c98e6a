"""Damaged records written straight into Redis: claim archives them with a reason, keeps going."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis
from redis_servers import namespaced_broker

from conveyor.brokers.redis import RedisBroker, keys
from conveyor.errors import ConfigError
from conveyor.message import Completion, TaskMessage, TaskState

QUEUE = "default"


async def _raw(broker: RedisBroker) -> aioredis.Redis:
    client = broker._client
    assert isinstance(client, aioredis.Redis)
    return client


async def _plant(broker: RedisBroker, task_id: str, fields: dict[str, str]) -> None:
    """Write a task hash by hand and list it as pending (ahead of everything else)."""
    client = await _raw(broker)
    k = keys.queue_keys(broker.namespace, QUEUE)
    if fields:
        await client.hset(keys.task(broker.namespace, QUEUE, task_id), mapping=fields)
    await client.zadd(k.pending, {task_id: 1})


async def test_corrupt_records_are_archived_with_a_reason_and_good_ones_claimed(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        caplog.set_level(logging.ERROR, logger="conveyor.brokers.redis.broker")
        await redis_broker.enqueue([TaskMessage(id="good", type="t", queue=QUEUE)])
        await _plant(redis_broker, "no-type", {"state": "pending", "payload": "1"})
        await _plant(
            redis_broker,
            "bad-state",
            {"state": "exploded", "type": "t", "payload": "1", "encoding": "json"},
        )
        await _plant(
            redis_broker,
            "bad-numbers",
            {"state": "pending", "type": "t", "payload": "1", "encoding": "json", "max_retry": "x"},
        )
        await _plant(redis_broker, "missing", {})

        leases = await redis_broker.claim([QUEUE], limit=10, lease_s=30)

        assert [lease.task.id for lease in leases] == ["good"]
        archived = {t.id: t for t in await redis_broker.list_tasks(QUEUE, TaskState.ARCHIVED)}
        assert set(archived) == {"no-type", "bad-state", "bad-numbers", "missing"}
        assert archived["no-type"].last_error == "corrupt record: missing type"
        assert archived["bad-state"].last_error == "corrupt record: bad state exploded"
        assert archived["bad-numbers"].last_error == "corrupt record: bad max_retry"
        assert archived["missing"].last_error == "corrupt record: record missing"
        stats = await redis_broker.queue_stats(QUEUE)
        assert (stats.pending, stats.active, stats.archived) == (0, 1, 4)
        logged = {r.task_id for r in caplog.records if r.levelno == logging.ERROR}  # type: ignore[attr-defined]
        assert logged == {"no-type", "bad-state", "bad-numbers", "missing"}


async def test_a_stray_pending_entry_is_dropped_without_touching_the_real_record(
    redis_url: str,
) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        [info] = await redis_broker.enqueue([TaskMessage(id="s", type="t", process_in_s=3600)])
        await _plant(redis_broker, "s", {})  # a pending entry for a task that is SCHEDULED

        assert await redis_broker.claim([QUEUE], limit=5, lease_s=30) == []
        assert (await redis_broker.get_task(QUEUE, "s")).state is TaskState.SCHEDULED
        assert info.state is TaskState.SCHEDULED


async def test_garbled_fields_still_list(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        client = await _raw(redis_broker)
        k = keys.queue_keys(redis_broker.namespace, QUEUE)
        tkey = keys.task(redis_broker.namespace, QUEUE, "odd")
        await client.hset(tkey, mapping={"state": "archived", "retried": "many", "ready": "soon"})
        await client.zadd(k.archived, {"odd": 5})

        [task] = await redis_broker.list_tasks(QUEUE, TaskState.ARCHIVED)

        assert (task.id, task.type, task.retried, task.state) == ("odd", "", 0, TaskState.ARCHIVED)


async def test_a_garbled_since_does_not_break_listing_active_tasks(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        await redis_broker.enqueue(
            [TaskMessage(id=f"t{i}", type="t", queue=QUEUE) for i in range(2)]
        )
        await redis_broker.claim([QUEUE], limit=2, lease_s=30)
        client = await _raw(redis_broker)
        await client.hset(keys.task(redis_broker.namespace, QUEUE, "t1"), "since", "yesterday")

        listed = await redis_broker.list_tasks(QUEUE, TaskState.ACTIVE)

        assert [task.id for task in listed] == ["t1", "t0"]  # the garbled one sorts first


async def test_successor_names_are_checked_on_cluster_too(redis_url: str) -> None:
    # On Cluster a completion is recorded per queue; its successors' names must still be held
    # to the name rule before anything is written (they become key names).
    async with namespaced_broker(redis_url) as redis_broker:
        redis_broker._cluster = True  # the per-queue path, on a standalone server
        await redis_broker.enqueue([TaskMessage(id="t", type="t", queue=QUEUE)])
        [lease] = await redis_broker.claim([QUEUE], limit=1, lease_s=30)
        bad = TaskMessage(id="has space", type="t", queue=QUEUE)

        with pytest.raises(ConfigError):
            await redis_broker.complete([Completion(lease=lease, successors=(bad,))])

        assert (await redis_broker.get_task(QUEUE, "t")).state is TaskState.ACTIVE


async def test_a_task_id_that_is_not_utf8_is_archived_and_still_listed(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        await redis_broker.enqueue([TaskMessage(id="good", type="t", queue=QUEUE)])
        client = await _raw(redis_broker)
        k = keys.queue_keys(redis_broker.namespace, QUEUE)
        bad_key = keys.task(redis_broker.namespace, QUEUE, "x").encode()[:-1] + b"\xff"
        await client.hset(bad_key, mapping={"type": "t", "state": "pending", "payload": "1"})
        await client.zadd(k.pending, {b"\xff": 1})

        leases = await redis_broker.claim([QUEUE], limit=5, lease_s=30)
        archived = await redis_broker.list_tasks(QUEUE, TaskState.ARCHIVED)

        assert [lease.task.id for lease in leases] == ["good"]
        assert [task.id for task in archived] == ["\ufffd"]
