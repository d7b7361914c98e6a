"""Redis-only behaviour: combined concurrent enqueues, key layout on the server, wake lists."""

from __future__ import annotations

import asyncio
import re

import pytest
import redis.asyncio as aioredis
from redis_servers import namespaced_broker

from conveyor.brokers.protocol import DAILY_TOTALS_KEPT_DAYS
from conveyor.brokers.redis import RedisBroker, keys
from conveyor.brokers.throughput import MINUTE_TOTALS_KEPT
from conveyor.errors import BrokerUnavailableError, DuplicateTaskError, TaskIdConflictError
from conveyor.message import Completion, TaskMessage, TaskState

pytestmark = pytest.mark.redis


def _raw(broker: RedisBroker) -> aioredis.Redis:
    client = broker._client
    assert isinstance(client, aioredis.Redis)
    return client


async def test_concurrent_enqueues_are_combined_but_each_stays_all_or_nothing(
    redis_url: str,
) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        await redis_broker.enqueue([TaskMessage(id="taken", type="t")])
        calls = [
            redis_broker.enqueue(
                [TaskMessage(id=f"ok-{i}", type="t"), TaskMessage(id=f"ok2-{i}", type="t")]
            )
            for i in range(20)
        ]
        calls.insert(
            5,
            redis_broker.enqueue(
                [TaskMessage(id="new", type="t"), TaskMessage(id="taken", type="t")]
            ),
        )
        calls.insert(
            9,
            redis_broker.enqueue(
                [TaskMessage(id="u1", type="t", unique_key="k")] * 1
                + [TaskMessage(id="u2", type="t", unique_key="k")]
            ),
        )

        results = await asyncio.gather(*calls, return_exceptions=True)

        assert isinstance(results[5], TaskIdConflictError) and results[5].task_id == "taken"
        assert isinstance(results[9], DuplicateTaskError) and results[9].task_id == "u2"
        stored = [r for i, r in enumerate(results) if i not in (5, 9)]
        assert all(isinstance(r, list) and len(r) == 2 for r in stored)
        stats = await redis_broker.queue_stats("default")
        assert stats.pending == 1 + 40  # "new", "u1" and "u2" were not stored
        pending = {
            t.id for t in await redis_broker.list_tasks("default", TaskState.PENDING, limit=100)
        }
        assert not pending & {"new", "u1", "u2"}


async def test_every_key_lives_under_the_namespace_and_a_queue_hash_tag(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        ns = redis_broker.namespace
        await redis_broker.enqueue(
            [
                TaskMessage(id="a:b", type="t", queue="q:1", unique_key="u", retention_s=60),
                TaskMessage(id="c", type="t", queue="q:1", process_in_s=60),
            ]
        )
        [lease] = await redis_broker.claim(["q:1"], limit=1, lease_s=30)
        await redis_broker.complete([Completion(lease=lease, result=b"1")])
        await redis_broker.pause_queue("other")

        found = sorted(
            [k.decode() async for k in _raw(redis_broker).scan_iter(match=f"{ns}:*", count=10_000)]
        )

        # The claim's receipt is this broker object's (its first), in its queue's slot, and
        # expires.
        receipt = r"claimed:\{q:1\}:[0-9a-f]{32}:0"
        pattern = re.compile(re.escape(ns) + rf":(queues|{receipt}|\{{(q:1|other)\}}:.+)")
        assert found and all(pattern.fullmatch(k) for k in found), found
        assert keys.task(ns, "q:1", "a:b") in found
        assert keys.registry(ns) in found
        [receipt_key] = [k for k in found if ":claimed:" in k]
        assert 0 < await _raw(redis_broker).pttl(receipt_key) <= 30_000


async def test_a_process_at_in_the_past_is_pending_and_in_the_future_is_never_early(
    redis_url: str,
) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        server_now = float((await _raw(redis_broker).time())[0])
        [past, future] = await redis_broker.enqueue(
            [
                TaskMessage(id="past", type="t", process_at=server_now - 10),
                TaskMessage(id="future", type="t", process_at=server_now + 3600.0000004),
            ]
        )
        assert (past.state, future.state) == (TaskState.PENDING, TaskState.SCHEDULED)
        [lease] = await redis_broker.claim(["default"], limit=5, lease_s=30)
        assert lease.task.id == "past"
        info = await redis_broker.get_task("default", "future")
        assert info.next_process_at is not None
        assert info.next_process_at.timestamp() == pytest.approx(
            server_now + 3600.0000004, abs=1e-6
        )


async def test_stale_wake_tokens_are_cleared_by_an_idle_wait(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        k = keys.queue_keys(redis_broker.namespace, "default")
        await redis_broker.enqueue([TaskMessage(id="a", type="t")])
        assert await _raw(redis_broker).llen(k.wake) > 0
        [lease] = await redis_broker.claim(["default"], limit=1, lease_s=30)
        await redis_broker.complete([Completion(lease=lease)])

        await redis_broker.wait_for_tasks(["default"], 0.05)

        assert await _raw(redis_broker).llen(k.wake) == 0


async def test_purge_drops_daily_totals_older_than_the_days_kept(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        [info] = await redis_broker.enqueue([TaskMessage(id="one", type="t")])
        [lease] = await redis_broker.claim(["default"], limit=1, lease_s=30)
        await redis_broker.complete([Completion(lease=lease)])
        stats_key = keys.queue_keys(redis_broker._ns, "default").stats
        raw = _raw(redis_broker)
        today = int((await raw.time())[0]) // 86400
        old, kept = today - DAILY_TOTALS_KEPT_DAYS - 1, today - DAILY_TOTALS_KEPT_DAYS
        await raw.hset(stats_key, mapping={f"p:{old}": 7, f"f:{old}": 2, f"p:{kept}": 5})

        await redis_broker.purge_expired()

        fields = {k.decode() for k in await raw.hkeys(stats_key)}
        assert {f for f in fields if f[1] == ":"} == {f"p:{today}", f"p:{kept}"}
        assert (await redis_broker.queue_stats(info.queue)).processed_today == 1


async def test_purge_drops_minute_totals_older_than_the_minutes_kept(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        [info] = await redis_broker.enqueue([TaskMessage(id="one", type="t")])
        [lease] = await redis_broker.claim(["default"], limit=1, lease_s=30)
        await redis_broker.complete([Completion(lease=lease)])
        stats_key = keys.queue_keys(redis_broker._ns, "default").stats
        raw = _raw(redis_broker)
        minute = int((await raw.time())[0]) // 60
        old, kept = minute - MINUTE_TOTALS_KEPT - 5, minute - MINUTE_TOTALS_KEPT + 5
        await raw.hset(stats_key, mapping={f"pm:{old}": 7, f"fm:{old}": 2, f"pm:{kept}": 5})

        await redis_broker.purge_expired()

        fields = {k.decode() for k in await raw.hkeys(stats_key)}
        assert f"pm:{old}" not in fields and f"fm:{old}" not in fields
        assert f"pm:{kept}" in fields
        series = await redis_broker.throughput(info.queue, minutes=MINUTE_TOTALS_KEPT)
        assert sum(m.processed for m in series) == 5 + 1


async def test_a_claim_across_slots_keeps_what_it_leased_when_a_later_slot_fails(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On Cluster a claim runs one script per queue (one slot each). A node failing for a later
    # queue must not throw away the tasks earlier scripts already made ACTIVE: they would have
    # no holder until their leases lapsed. The node failure is simulated; the claims are real.
    async with namespaced_broker(redis_url) as redis_broker:
        await redis_broker.enqueue(
            [TaskMessage(id=f"a{i}", type="t", queue="qa") for i in range(3)]
        )
        await redis_broker.enqueue([TaskMessage(id="b0", type="t", queue="qb")])
        monkeypatch.setattr(redis_broker, "_groups", lambda queues: [[q] for q in queues])
        real_run = redis_broker._run

        async def qb_node_down(name: str, keys_: list[str], args: list[object]) -> object:
            if name == "claim" and "{qb}" in keys_[0]:
                raise BrokerUnavailableError("CLUSTERDOWN (simulated)")
            return await real_run(name, keys_, args)

        monkeypatch.setattr(redis_broker, "_run", qb_node_down)
        leases = await redis_broker.claim(["qa", "qb"], limit=10, lease_s=30)
        assert sorted(lease.task.id for lease in leases) == ["a0", "a1", "a2"]

        with pytest.raises(BrokerUnavailableError):  # nothing leased yet: the error surfaces
            await redis_broker.claim(["qb", "qa"], limit=10, lease_s=30)
        assert (await redis_broker.queue_stats("qb")).pending == 1
