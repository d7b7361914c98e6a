"""Redis delete_queue: no key of the queue is left but its token counter, on one server and on
Cluster (where the registry entry goes in a second step)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_servers import Fleet, namespaced_broker, start_cluster

from conveyor.brokers.redis import RedisBroker, base, inspection, keys
from conveyor.errors import QueueInUseError, QueueNotEmptyError
from conveyor.message import Completion, QueueStats, TaskMessage, TaskState

pytestmark = pytest.mark.redis


def _raw(broker: RedisBroker) -> aioredis.Redis:
    client = broker._client
    assert isinstance(client, aioredis.Redis)
    return client


async def _queue_keys_left(broker: RedisBroker, queue: str) -> list[str]:
    match = keys.queue_prefix(broker.namespace, queue) + "*"
    return sorted([k.decode() async for k in _raw(broker).scan_iter(match=match, count=10_000)])


async def _fill(broker: RedisBroker, queue: str) -> None:
    """Tasks in every state but ACTIVE, unique locks (with and without TTL), counters, a pause,
    wake-up tokens and a retained result's expiry entry."""
    await broker.enqueue(
        [
            TaskMessage(id=f"r{i}", type="t", queue=queue, retention_s=600, unique_key=f"k{i}")
            for i in range(3)
        ]
    )
    [done, retried, archived] = await broker.claim([queue], limit=3, lease_s=30)
    assert await broker.complete([Completion(lease=done, result=b"1")]) == [True]
    await broker.retry(retried, error="boom", delay_s=3600)
    await broker.archive(archived, error="boom")
    await broker.enqueue(
        [
            TaskMessage(id="p", type="t", queue=queue, unique_key="kp", unique_ttl_s=3600),
            TaskMessage(id="s", type="t", queue=queue, process_in_s=3600, unique_key="ks"),
        ]
    )
    await broker.pause_queue(queue)
    await broker.unpause_queue(queue)  # leaves wake-up tokens behind


@pytest.fixture(params=["one script", "in batches"])
def batch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run a test both ways a forced delete goes: one script for a small queue, and (with a
    tiny batch size, so the same few tasks make a "big" queue) pause and delete in batches."""
    if request.param == "in batches":
        monkeypatch.setattr(inspection, "BATCH", 2)
    return inspection.BATCH


async def test_force_delete_leaves_only_the_token_counter(redis_url: str, batch: int) -> None:
    async with namespaced_broker(redis_url) as broker:
        ns = broker.namespace
        await _fill(broker, "doomed")
        await broker.enqueue([TaskMessage(id="x", type="t", queue="kept", unique_key="k0")])
        kept_before = await _queue_keys_left(broker, "kept")
        left = await _queue_keys_left(broker, "doomed")
        assert keys.unique_lock(ns, "doomed", "kp") in left
        assert keys.queue_keys(ns, "doomed").wake in left

        await broker.delete_queue("doomed", force=True)

        # The counter stays so a fencing token never repeats (see delete_queue.lua).
        assert await _queue_keys_left(broker, "doomed") == [keys.queue_keys(ns, "doomed").seq]
        assert await _queue_keys_left(broker, "kept") == kept_before
        members = await _raw(broker).smembers(keys.registry(ns))
        assert members == {b"kept"}


async def test_a_refused_delete_changes_no_key(redis_url: str, batch: int) -> None:
    async with namespaced_broker(redis_url) as broker:
        await _fill(broker, "busy")
        await broker.enqueue([TaskMessage(id="a", type="t", queue="busy")])
        await broker.claim(["busy"], limit=1, lease_s=30)
        raw = _raw(broker)
        before = {k: await raw.dump(k) for k in await _queue_keys_left(broker, "busy")}

        with pytest.raises(QueueNotEmptyError):
            await broker.delete_queue("busy", force=False)
        with pytest.raises(QueueInUseError):
            await broker.delete_queue("busy", force=True)

        after = {k: await raw.dump(k) for k in await _queue_keys_left(broker, "busy")}
        assert after == before
        assert "busy" in await broker.list_queues()


async def test_bulk_operations_on_a_big_state_run_in_batches(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A state of millions must not block Redis in one script run: each run acts on at most
    # BATCH tasks (7 here, so 30 tasks make five runs and a short last one).
    monkeypatch.setattr(inspection, "BATCH", 7)
    async with namespaced_broker(redis_url) as broker:
        limits: list[int] = []
        run = broker._run

        async def recording(name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
            if name == "manage":
                limits.append(int(args[3]))
            return await run(name, keys_, args)

        monkeypatch.setattr(broker, "_run", recording)
        await broker.enqueue(
            [TaskMessage(id=f"t{i}", type="t", queue="big", unique_key=f"u{i}") for i in range(30)]
        )

        assert await broker.archive_tasks("big", TaskState.PENDING) == 30
        assert await broker.run_tasks("big", TaskState.ARCHIVED) == 30
        assert (await broker.queue_stats("big")).pending == 30
        assert await broker.delete_tasks("big", TaskState.PENDING) == 30

        assert (await broker.queue_stats("big")).size == 0
        locks = {keys.unique_lock(broker.namespace, "big", f"u{i}") for i in range(30)}
        assert not locks & set(await _queue_keys_left(broker, "big"))
        assert len(limits) == 3 * 5 and max(limits) == 7


async def test_a_forced_delete_in_batches_restores_the_pause_flag_when_refused(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second read finds an ACTIVE task (a claim raced the pause): nothing is deleted and
    # the queue is left paused only if it was paused before.
    monkeypatch.setattr(inspection, "BATCH", 2)
    async with namespaced_broker(redis_url) as broker:
        await _fill(broker, "racy")
        stats = broker.queue_stats
        reads = 0

        async def claim_between_reads(queue: str) -> QueueStats:
            nonlocal reads
            reads += 1
            if reads == 2:
                await broker.unpause_queue(queue)  # the claim landed just before the pause
                await broker.enqueue([TaskMessage(id="late", type="t", queue=queue)])
                assert len(await broker.claim([queue], limit=1, lease_s=30)) == 1
                await broker.pause_queue(queue)
            return await stats(queue)

        monkeypatch.setattr(broker, "queue_stats", claim_between_reads)
        with pytest.raises(QueueInUseError):
            await broker.delete_queue("racy", force=True)
        after = await stats("racy")
        assert not after.paused
        assert (after.active, after.pending, after.scheduled, after.retry) == (1, 1, 1, 1)
        assert (after.archived, after.completed) == (1, 1)


async def test_an_enqueue_after_delete_registers_the_queue_again(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        await broker.enqueue([TaskMessage(id="a", type="t", queue="again")])
        await broker.delete_queue("again", force=True)
        assert await broker.list_queues() == []

        await broker.enqueue([TaskMessage(id="a", type="t", queue="again")])
        assert await broker.list_queues() == ["again"]
        await broker.delete_queue("again", force=True)
        await asyncio.to_thread(
            broker.enqueue_blocking, [TaskMessage(id="b", type="t", queue="again")]
        )
        assert await broker.list_queues() == ["again"]


async def test_a_queue_deleted_by_another_client_is_registered_again_by_any_store(
    redis_url: str,
) -> None:
    # The producer registered "shared" before another client deleted it: its next enqueue,
    # blocking enqueue or successor re-registers it in the same step, so recovery and the
    # listing see the re-created queue.
    async with namespaced_broker(redis_url) as producer:
        admin = RedisBroker.from_url(f"{redis_url}?namespace={producer.namespace}")
        try:
            stores = [
                lambda m: producer.enqueue([m]),
                lambda m: asyncio.to_thread(producer.enqueue_blocking, [m]),
                lambda m: _complete_with_successor(producer, m),
            ]
            for i, store in enumerate(stores):
                await producer.enqueue([TaskMessage(id=f"before-{i}", type="t", queue="shared")])
                await admin.delete_queue("shared", force=True)
                assert await admin.list_queues() == []

                await store(TaskMessage(id=f"after-{i}", type="t", queue="shared"))

                assert "shared" in await admin.list_queues()
                await admin.delete_queue("shared", force=True)
        finally:
            await admin.close()


async def _complete_with_successor(broker: RedisBroker, successor: TaskMessage) -> None:
    await broker.enqueue([TaskMessage(id=f"parent-{successor.id}", type="t", queue="parents")])
    [lease] = await broker.claim(["parents"], limit=1, lease_s=30)
    assert await broker.complete([Completion(lease=lease, successors=(successor,))]) == [True]


async def test_cluster_delete_queue_removes_the_registry_entry_after_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Fleet() as fleet:
        addresses = await asyncio.to_thread(start_cluster, fleet, tmp_path)
        broker = RedisBroker.from_url(f"redis+cluster://{addresses[0]}?namespace=cl")
        try:
            queues = [f"q{i}" for i in range(4)]
            for q in queues:
                await _fill(broker, q)
            await broker.enqueue([TaskMessage(id="a", type="t", queue="q0")])
            await broker.claim(["q0"], limit=1, lease_s=30)

            with pytest.raises(QueueNotEmptyError):
                await broker.delete_queue("q1", force=False)
            with pytest.raises(QueueInUseError):
                await broker.delete_queue("q0", force=True)
            await broker.delete_queue("q1", force=True)
            await broker.delete_queue("q2", force=True)

            assert await broker.list_queues() == ["q0", "q3"]
            for q in ("q1", "q2"):
                stats = await broker.queue_stats(q)
                assert stats.size == stats.processed_today == 0
            assert (await broker.queue_stats("q3")).processed_today == 3
            await broker.enqueue([TaskMessage(id="p", type="t", queue="q1", unique_key="kp")])
            assert await broker.list_queues() == ["q0", "q1", "q3"]

            # Another client deletes a queue this one already registered. The registry is in
            # another slot, so this client re-adds the queues it uses after each refresh period
            # (0 here, instead of seconds): its next enqueue, blocking enqueue or claim lists
            # the queue again.
            monkeypatch.setattr(base, "REGISTRY_REFRESH_S", 0.0)
            admin = RedisBroker.from_url(f"redis+cluster://{addresses[0]}?namespace=cl")
            try:
                uses = [
                    lambda: broker.enqueue([TaskMessage(id="e", type="t", queue="q3")]),
                    lambda: asyncio.to_thread(
                        broker.enqueue_blocking, [TaskMessage(id="b", type="t", queue="q3")]
                    ),
                    lambda: broker.claim(["q3"], limit=1, lease_s=30),
                ]
                for use in uses:
                    await admin.delete_queue("q3", force=True)
                    assert "q3" not in await admin.list_queues()
                    await use()
                    assert "q3" in await admin.list_queues()
            finally:
                await admin.close()
        finally:
            await broker.close()
