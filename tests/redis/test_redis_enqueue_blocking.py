"""RedisBroker.enqueue_blocking: the synchronous enqueue, held to exactly enqueue's outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_servers import Fleet, namespaced_broker, server

from conveyor.brokers.redis import RedisBroker
from conveyor.errors import (
    BrokerError,
    BrokerUnavailableError,
    DuplicateTaskError,
    InvalidNameError,
    TaskIdConflictError,
)
from conveyor.message import Encoding, TaskInfo, TaskMessage, TaskState

pytestmark = pytest.mark.redis

Enqueue = Callable[[RedisBroker, Sequence[TaskMessage]], Any]


async def _async_enqueue(broker: RedisBroker, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
    return await broker.enqueue(messages)


async def _blocking_enqueue(broker: RedisBroker, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
    # On a thread, as a sync producer would call it (no event loop there).
    return await asyncio.to_thread(broker.enqueue_blocking, messages)


BOTH = pytest.mark.parametrize(
    "enqueue", [_async_enqueue, _blocking_enqueue], ids=["async", "sync"]
)


def _variety(prefix: str, now: float) -> list[TaskMessage]:
    """One message of each kind the script stores differently."""
    return [
        TaskMessage(id=f"{prefix}-plain", type="t"),
        TaskMessage(
            id=f"{prefix}-bytes",
            type="t.b",
            payload=b"\x00 |[]\n\xff",
            encoding=Encoding.BYTES,
            max_retry=3,
            timeout_s=2.5,
            deadline=now + 3600,
            retention_s=60,
        ),
        TaskMessage(id=f"{prefix}-later", type="t", process_in_s=3600),
        TaskMessage(id=f"{prefix}-at", type="t", process_at=now + 7200.123456),
        TaskMessage(id=f"{prefix}-past", type="t", process_at=now - 10),
        TaskMessage(id=f"{prefix}-uniq", type="t", unique_key=f"{prefix} key | ü", unique_ttl_s=30),
        TaskMessage(id=f"{prefix}-other", type="t", queue="other", process_in_s=0),
    ]


def _comparable(info: TaskInfo, prefix: str) -> TaskInfo:
    """An info with what differs between two runs (id, times, unique key text) blanked."""
    return dataclasses.replace(
        info,
        id=info.id.removeprefix(prefix),
        enqueued_at=None,
        next_process_at=None,
        unique_key=None if info.unique_key is None else info.unique_key.removeprefix(prefix),
    )


async def _records(broker: RedisBroker, infos: Sequence[TaskInfo]) -> list[dict[bytes, bytes]]:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/9")
    try:
        out = []
        for info in infos:
            raw = await client.hgetall(broker._keys(info.queue).task_prefix + info.id)
            # Times differ between the two runs; everything else must be byte-identical.
            out.append(
                {k: v for k, v in raw.items() if k not in (b"enqueued_at", b"rscore", b"ready")}
            )
        return out
    finally:
        await client.aclose()


async def test_blocking_enqueue_stores_and_reports_exactly_as_enqueue(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        now = time.time()
        via_async = await broker.enqueue(_variety("a", now))
        via_sync = await asyncio.to_thread(broker.enqueue_blocking, _variety("s", now))

        assert [_comparable(i, "s") for i in via_sync] == [_comparable(i, "a") for i in via_async]
        assert [i.state for i in via_sync] == [
            TaskState.PENDING,
            TaskState.PENDING,
            TaskState.SCHEDULED,
            TaskState.SCHEDULED,
            TaskState.PENDING,
            TaskState.PENDING,
            TaskState.PENDING,
        ]
        # What the inspector reads back agrees with what the call returned.
        for info in via_sync:
            stored = await broker.get_task(info.queue, info.id)
            assert stored.enqueued_at == info.enqueued_at
            assert stored.next_process_at == info.next_process_at
            assert stored.state is info.state
        async_records = await _records(broker, via_async)
        sync_records = await _records(broker, via_sync)
        for a, s in zip(async_records, sync_records, strict=True):
            a.pop(b"unique_key", None)
            s.pop(b"unique_key", None)
            assert a == s
        assert await broker.list_queues() == ["default", "other"]
        assert await asyncio.to_thread(broker.enqueue_blocking, []) == []


@BOTH
async def test_a_refused_call_stores_nothing(redis_url: str, enqueue: Enqueue) -> None:
    async with namespaced_broker(redis_url) as broker:
        await broker.enqueue(
            [TaskMessage(id="taken", type="t"), TaskMessage(id="u", type="t", unique_key="held")]
        )
        with pytest.raises(TaskIdConflictError) as conflict:
            await enqueue(
                broker, [TaskMessage(id="new1", type="t"), TaskMessage(id="taken", type="t")]
            )
        assert (conflict.value.task_id, conflict.value.queue) == ("taken", "default")
        with pytest.raises(TaskIdConflictError) as twice:
            await enqueue(
                broker, [TaskMessage(id="new2", type="t"), TaskMessage(id="new2", type="t")]
            )
        assert twice.value.task_id == "new2"
        with pytest.raises(DuplicateTaskError) as held:
            await enqueue(
                broker,
                [
                    TaskMessage(id="new3", type="t"),
                    TaskMessage(id="u2", type="t", unique_key="held"),
                ],
            )
        assert held.value.task_id == "u2"
        with pytest.raises(DuplicateTaskError) as same_call:
            await enqueue(
                broker,
                [
                    TaskMessage(id="k1", type="t", unique_key="fresh"),
                    TaskMessage(id="k2", type="t", unique_key="fresh"),
                ],
            )
        assert same_call.value.task_id == "k2"

        assert (await broker.queue_stats("default")).pending == 2
        # Nothing of the refused calls was stored, not even their unique locks.
        [ok] = await enqueue(broker, [TaskMessage(id="k3", type="t", unique_key="fresh")])
        assert ok.state is TaskState.PENDING


@BOTH
async def test_large_batches_across_queues_keep_order_and_stay_all_or_nothing(
    redis_url: str, enqueue: Enqueue
) -> None:
    # Bigger than the script's EXISTS and ZADD chunks, in two queues, with several shapes.
    async with namespaced_broker(redis_url) as broker:
        await broker.enqueue([TaskMessage(id="late-conflict", type="t", queue="b")])
        messages = [
            TaskMessage(
                id=f"m{i}",
                type=f"t{i % 3}",
                queue="ab"[i % 2],
                payload=b"[%d]" % i,
                max_retry=i % 4,
            )
            for i in range(2600)
        ]
        with pytest.raises(TaskIdConflictError):
            await enqueue(broker, [*messages, TaskMessage(id="late-conflict", type="t", queue="b")])
        assert (await broker.queue_stats("a")).pending == 0
        assert (await broker.queue_stats("b")).pending == 1

        infos = await enqueue(broker, messages)
        assert [i.id for i in infos] == [m.id for m in messages]
        listed = await broker.list_tasks("a", TaskState.PENDING, limit=2000)
        assert [t.id for t in listed] == [m.id for m in messages if m.queue == "a"]
        assert [(t.type, t.max_retry, t.payload) for t in listed[:3]] == [
            ("t0", 0, [0]),
            ("t2", 2, [2]),
            ("t1", 0, [4]),
        ]


async def test_threads_enqueue_concurrently(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        errors: list[BaseException] = []

        def produce(n: int) -> None:
            try:
                for i in range(50):
                    broker.enqueue_blocking([TaskMessage(id=f"t{n}-{i}", type="t")])
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [thread.join() for thread in threads])
        assert errors == []
        assert (await broker.queue_stats("default")).pending == 200


async def test_works_after_script_flush_restart_and_killed_connections(tmp_path: Path) -> None:
    with Fleet() as fleet:
        redis_server = fleet.add(server(tmp_path / "data"))
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{redis_server.port}/0?namespace=bl")
        try:
            broker.enqueue_blocking([TaskMessage(id="a", type="t")])
            with redis_server.client() as c:
                c.script_flush()  # a private server: the script must be reloaded on NOSCRIPT
            [info] = await asyncio.to_thread(
                broker.enqueue_blocking, [TaskMessage(id="b", type="t")]
            )
            assert info.state is TaskState.PENDING
            with redis_server.client() as c:
                c.script_flush()
            await broker.enqueue([TaskMessage(id="b2", type="t")])  # the async path reloads too
            leases = await broker.claim(["default"], limit=5, lease_s=30)
            assert [le.task.id for le in leases] == ["a", "b", "b2"]
            redis_server.kill()
            await asyncio.to_thread(redis_server.start)  # empty again: no data, no scripts
            await asyncio.to_thread(broker.enqueue_blocking, [TaskMessage(id="c", type="t")])
            assert (await broker.get_task("default", "c")).state is TaskState.PENDING
            assert await broker.list_queues() in (["default"], [])
            # Kept connections the server closed are replaced before use, on both paths.
            with redis_server.client() as c:
                c.client_kill_filter(_type="normal", skipme=True)
            for _ in range(3):  # an asyncio stream learns of the close when its loop reads
                await asyncio.sleep(0)
            await broker.enqueue([TaskMessage(id="d", type="t")])
            await asyncio.to_thread(broker.enqueue_blocking, [TaskMessage(id="e", type="t")])
            leases = await broker.claim(["default"], limit=5, lease_s=30)
            assert [le.task.id for le in leases] == ["c", "d", "e"]
        finally:
            await broker.close()


async def test_errors_never_show_the_password(tmp_path: Path) -> None:
    secret, wrong = "pw-0123456789", "pw-wrong-98765"
    with Fleet() as fleet:
        redis_server = fleet.add(server(tmp_path / "auth", "--requirepass", secret))
        good = RedisBroker.from_url(f"redis://:{secret}@127.0.0.1:{redis_server.port}/0")
        bad = RedisBroker.from_url(f"redis://:{wrong}@127.0.0.1:{redis_server.port}/0")
        nowhere = RedisBroker.from_url(f"redis://:{wrong}@127.0.0.1:{redis_server.port + 1}/0")
        try:
            [info] = await asyncio.to_thread(good.enqueue_blocking, [TaskMessage(id="a", type="t")])
            assert info.state is TaskState.PENDING
            for broker in (bad, nowhere):
                client = broker._sync_side().client
                client.get_retry().update_retries(0)  # a refusal is final; skip the backoff
            with pytest.raises(BrokerError) as refused:
                await asyncio.to_thread(bad.enqueue_blocking, [TaskMessage(id="b", type="t")])
            with pytest.raises(BrokerUnavailableError) as unreachable:
                await asyncio.to_thread(nowhere.enqueue_blocking, [TaskMessage(id="c", type="t")])
        finally:
            for broker in (good, bad, nowhere):
                await broker.close()
    for error in (refused.value, unreachable.value):
        assert wrong not in str(error) and secret not in str(error)
        assert wrong not in repr(error) and secret not in repr(error)
    assert not isinstance(refused.value, BrokerUnavailableError)


@BOTH
@pytest.mark.parametrize(
    ("task_id", "task_type"),
    [("a\nb", "t"), ("ok", "t\nt"), ("a b", "t"), ("", "t"), ("ok", "x" * 256), (7, "t")],
)
async def test_bad_names_are_refused_before_anything_is_stored(
    redis_url: str, enqueue: Enqueue, task_id: Any, task_type: Any
) -> None:
    async with namespaced_broker(redis_url) as broker:
        batch = [TaskMessage(id="fine", type="t"), TaskMessage(id=task_id, type=task_type)]
        with pytest.raises(InvalidNameError):
            await enqueue(broker, batch)
        assert await broker.list_queues() == []
