"""Process-level tests against private Redis servers: eviction warning, restart, Sentinel, Cluster.

Each starts its own redis-server / redis-sentinel processes on free loopback ports with data in a
temp dir (see redis_servers.py) and stops only those, by pid.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis_servers import (
    Fleet,
    namespaced_broker,
    need_binaries,
    sentinel,
    server,
    start_cluster,
)

from conveyor import AsyncClient, Client, Task, signature
from conveyor.brokers.redis import RedisBroker
from conveyor.errors import BrokerError, BrokerUnavailableError, TaskIdConflictError
from conveyor.message import Completion, Lease, TaskMessage, TaskState, new_task_id
from support import eventually, wait_until

pytestmark = [pytest.mark.process, pytest.mark.redis]


async def test_describe_warns_on_an_evicting_server_and_reports_aof_always(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Fleet() as fleet:
        lru = fleet.add(server(tmp_path / "lru", "--maxmemory-policy", "allkeys-lru"))
        durable = fleet.add(
            server(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always")
        )
        caplog.set_level(logging.WARNING, logger="conveyor.brokers.redis.broker")

        evicting = RedisBroker.from_url(f"redis://127.0.0.1:{lru.port}/0")
        safe = RedisBroker.from_url(f"redis://127.0.0.1:{durable.port}/0")
        try:
            bad, good = await evicting.describe(), await safe.describe()
        finally:
            await evicting.close()
            await safe.close()

        assert any("allkeys-lru" in w for w in bad.warnings)
        assert "allkeys-lru" in caplog.text
        assert "AOF off" in bad.durability
        assert good.warnings == ()
        assert "appendfsync always" in good.durability
        assert good.backend == "redis"
        with durable.client() as admin:
            version = admin.info("server")["redis_version"]
        assert f"Redis {version})" in good.location  # the version HELLO reported


async def test_describe_warns_when_the_version_cannot_be_read(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis before 6.0 has no HELLO. No such server can run here (and redis-py 8 speaks RESP3,
    # which needs HELLO to connect at all), so the reply is faked, for HELLO only.
    async with namespaced_broker(redis_url) as broker:
        real = broker._client.execute_command

        async def no_hello(*args: Any, **options: Any) -> Any:
            if args[0] == "HELLO":
                raise ResponseError("unknown command 'HELLO', with args beginning with: ")
            return await real(*args, **options)

        monkeypatch.setattr(broker._client, "execute_command", no_hello)
        info = await broker.describe()
    assert any("could not read the server's version" in w for w in info.warnings)
    assert "Redis of unknown version" in info.location


async def _produce(broker: RedisBroker, ids: list[str], acked: set[str]) -> None:
    """Enqueue each id until acknowledged; an indeterminate failure is retried with the same id."""
    for task_id in ids:
        while True:
            try:
                await broker.enqueue([TaskMessage(id=task_id, type="t")])
            except TaskIdConflictError:
                pass  # an earlier, indeterminate attempt did store it
            except BrokerUnavailableError:
                continue  # redis-py already backed off; try the same id again
            acked.add(task_id)
            break


async def test_restart_under_load_loses_no_acknowledged_enqueue(tmp_path: Path) -> None:
    with Fleet() as fleet:
        data = tmp_path / "data"
        aof = ("--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction")
        redis_server = fleet.add(server(data, *aof))
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{redis_server.port}/0?namespace=restart")
        acked: set[str] = set()
        ids = [f"task-{i}" for i in range(400)]
        try:
            producer = asyncio.create_task(_produce(broker, ids, acked))
            idle_waiter = asyncio.create_task(broker.wait_for_tasks(["idle"], 60))
            await eventually(lambda: _ready(len(acked) >= 100), within=20)
            redis_server.kill()  # SIGKILL: only fsynced (acknowledged) writes may survive
            await asyncio.to_thread(redis_server.start)
            await asyncio.wait_for(producer, timeout=30)

            # The blocked waiter either rode out the restart or reported it; a new wait is woken.
            if idle_waiter.done():
                assert isinstance(idle_waiter.exception(), BrokerUnavailableError | type(None))
            else:
                await broker.enqueue([TaskMessage(id="idle-1", type="t", queue="idle")])
                await asyncio.wait_for(idle_waiter, timeout=10)
            second_waiter = asyncio.create_task(broker.wait_for_tasks(["idle2"], 60))
            await broker.enqueue([TaskMessage(id="idle-2", type="t", queue="idle2")])
            await asyncio.wait_for(second_waiter, timeout=10)

            seen: set[str] = set()

            async def drained() -> bool:
                leases = await broker.claim(["default"], limit=200, lease_s=30)
                seen.update(lease.task.id for lease in leases)
                assert all(await broker.complete([Completion(lease=le) for le in leases]))
                return seen >= acked

            await eventually(drained, within=20)
        finally:
            await broker.close()
        assert acked == set(ids)
        assert seen == acked


async def _ready(value: bool) -> bool:
    return value


def _replica_linked(replica_port: int, fleet: Fleet) -> bool:
    process = next(p for p in fleet.processes if p.port == replica_port)
    with process.client() as c:
        return c.info("replication").get("master_link_status") == "up"


def _master_port(sentinel_port: int, fleet: Fleet) -> int:
    process = next(p for p in fleet.processes if p.port == sentinel_port)
    with process.client() as c:
        host_port = c.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
    return int(host_port[1])


def _knows_replica(sentinel_port: int, fleet: Fleet) -> bool:
    process = next(p for p in fleet.processes if p.port == sentinel_port)
    with process.client(decode_responses=True) as c:
        replicas = c.execute_command("SENTINEL", "replicas", "mymaster")
    # A replica the Sentinel can promote: its link up (flags exactly "slave", no "disconnected"
    # nor "s_down") and its own link to the primary up. Redis 6.0's Sentinel lists a replica
    # before it has connected to it, and then refuses a failover (NOGOODSLAVE).
    fields = [
        r if isinstance(r, dict) else dict(zip(r[::2], r[1::2], strict=True)) for r in replicas
    ]
    return any(f["flags"] == "slave" and f.get("master-link-status") == "ok" for f in fields)


async def test_a_new_client_rides_out_a_sentinel_restart(tmp_path: Path) -> None:
    # Finding the primary asks the Sentinels only, so the broker's connect retry (about 4.5 s)
    # covers it: an enqueue from a client that has not connected yet waits for the Sentinel.
    need_binaries("redis-sentinel")
    with Fleet() as fleet:
        primary = fleet.add(server(tmp_path / "primary"))
        watcher = fleet.add(sentinel(tmp_path / "sentinel", primary.port, quorum=1))
        url = f"redis+sentinel://127.0.0.1:{watcher.port}/mymaster/0?namespace=conveyor-test-sr"
        watcher.stop()
        # While the Sentinel is down, a listener on its port hangs up on each connection: a
        # second one shows the first try failed and the client tried again.
        stand_in = socket.create_server(("127.0.0.1", watcher.port))
        stand_in.settimeout(10)
        broker = RedisBroker.from_url(url)
        try:
            enqueue = asyncio.create_task(broker.enqueue([TaskMessage(id="a", type="t")]))
            for _ in range(2):
                connection, _address = await asyncio.to_thread(stand_in.accept)
                connection.close()
            stand_in.close()
            assert not enqueue.done()
            await asyncio.to_thread(watcher.start)
            [info] = await asyncio.wait_for(enqueue, 10)
            assert info.id == "a"
        finally:
            stand_in.close()
            await broker.close()
            with primary.client() as admin:
                admin.delete(*admin.keys("conveyor-test-sr:*"))


async def test_sentinel_failover_keeps_the_broker_working(tmp_path: Path) -> None:
    with Fleet() as fleet:
        need_binaries("redis-sentinel")
        primary = fleet.add(server(tmp_path / "primary", "--appendonly", "yes"))
        replica = fleet.add(
            server(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port))
        )
        sentinels = [fleet.add(sentinel(tmp_path / f"s{i}", primary.port)) for i in range(3)]
        await asyncio.to_thread(wait_until, lambda: _replica_linked(replica.port, fleet), within=10)
        await asyncio.to_thread(
            wait_until, lambda: _knows_replica(sentinels[0].port, fleet), within=15
        )
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
        broker = RedisBroker.from_url(f"redis+sentinel://{hosts}/mymaster/0?namespace=sent")
        try:
            await broker.enqueue([TaskMessage(id=f"before-{i}", type="t") for i in range(19)])
            # The synchronous client finds the master through the Sentinels too.
            await asyncio.to_thread(
                broker.enqueue_blocking, [TaskMessage(id="before-19", type="t")]
            )
            with primary.client() as c:  # the failover must not lose them: let the replica catch up
                assert c.execute_command("WAIT", 1, 5000) == 1

            with sentinels[0].client() as c:
                c.execute_command("SENTINEL", "failover", "mymaster")
            await asyncio.to_thread(
                wait_until,
                lambda: _master_port(sentinels[0].port, fleet) == replica.port,
                within=15,
            )

            async def enqueued_after() -> bool:
                try:
                    await broker.enqueue([TaskMessage(id="after", type="t")])
                except BrokerUnavailableError:
                    return False
                return True

            await eventually(enqueued_after, within=15, interval=0.2)

            async def enqueued_after_blocking() -> bool:
                try:
                    await asyncio.to_thread(
                        broker.enqueue_blocking, [TaskMessage(id="after-sync", type="t")]
                    )
                except BrokerUnavailableError:
                    return False
                except TaskIdConflictError:  # an earlier try was stored, its reply lost
                    pass
                return True

            await eventually(enqueued_after_blocking, within=15, interval=0.2)
            leases = await broker.claim(["default"], limit=100, lease_s=30)
        finally:
            await broker.close()
        assert {le.task.id for le in leases} == {f"before-{i}" for i in range(20)} | {
            "after",
            "after-sync",
        }
        with replica.client() as c:
            assert c.info("replication")["role"] == "master"


async def test_cluster_enqueue_claim_and_wait_across_queues(tmp_path: Path) -> None:
    with Fleet() as fleet:
        addresses = await asyncio.to_thread(start_cluster, fleet, tmp_path)
        broker = RedisBroker.from_url(f"redis+cluster://{addresses[0]},{addresses[1]}?namespace=cl")
        queues = [f"q{i}" for i in range(6)]
        try:
            infos = await broker.enqueue(
                [TaskMessage(id=f"{q}-{j}", type="t", queue=q) for q in queues for j in range(3)]
            )
            assert {i.state for i in infos} == {TaskState.PENDING}
            assert await broker.list_queues() == queues

            # A workflow's first step goes to its queue through the workflow's outbox.
            await AsyncClient(broker).enqueue_workflow(signature("t", queue="q0"))
            assert (await broker.queue_stats("q0")).pending == 4

            # The synchronous enqueue splits per queue (slot) as enqueue does: atomic per queue,
            # queues in first-seen order, stopping at the first refusal.
            mixed = [
                TaskMessage(id=f"s-{q}-{j}", type="t", queue=q)
                for j in range(2)
                for q in ("q1", "q4")
            ]
            stored = await asyncio.to_thread(broker.enqueue_blocking, mixed)
            assert [i.id for i in stored] == [m.id for m in mixed]
            assert [i.queue for i in stored] == ["q1", "q4", "q1", "q4"]
            refused = [
                TaskMessage(id="s-new", type="t", queue="q2"),
                TaskMessage(id="q3-0", type="t", queue="q3"),
            ]
            with pytest.raises(TaskIdConflictError):
                await asyncio.to_thread(broker.enqueue_blocking, refused)
            assert (await broker.get_task("q2", "s-new")).state is TaskState.PENDING

            leases = await broker.claim(["q5", "q0"], limit=4, lease_s=30)
            assert [le.task.id for le in leases] == ["q5-0", "q5-1", "q5-2", "q0-0"]
            done = await broker.complete(
                [
                    Completion(
                        lease=leases[0], successors=(TaskMessage(id="next", type="t", queue="q3"),)
                    )
                ]
            )
            assert done == [True]
            assert (await broker.get_task("q3", "next")).state is TaskState.PENDING

            waiter = asyncio.create_task(broker.wait_for_tasks(["empty1", "empty2"], 10.0))
            await asyncio.sleep(0)
            await broker.enqueue([TaskMessage(id="wake", type="t", queue="empty2")])
            await asyncio.wait_for(waiter, timeout=5)  # woken by the enqueue, not the 10 s timeout
            assert [
                le.task.id for le in await broker.claim(["empty1", "empty2"], limit=5, lease_s=5)
            ] == ["wake"]
            # An idle worker's wait-and-claim takes the two-step path across slots.
            claiming = asyncio.create_task(
                broker.wait_and_claim(["empty3", "empty4"], limit=5, lease_s=5, timeout_s=10.0)
            )
            await asyncio.sleep(0)
            await broker.enqueue([TaskMessage(id="wake2", type="t", queue="empty4")])
            claimed = await asyncio.wait_for(claiming, timeout=5)
            assert [le.task.id for le in claimed] == ["wake2"]
            stats = await broker.queue_stats("q0")
            assert (stats.pending, stats.active) == (3, 1)  # the workflow step waits too
            info = await broker.describe()
            assert info.backend == "redis"
        finally:
            await broker.close()


async def test_password_and_acl_user_work_and_never_leak(tmp_path: Path) -> None:
    secret, wrong = "pw-0123456789", "pw-wrong-98765"
    with Fleet() as fleet:
        redis_server = fleet.add(server(tmp_path / "auth", "--requirepass", secret))
        with redis_server.client(password=secret) as c:
            c.execute_command("ACL", "SETUSER", "worker", "on", f">{secret}", "~*", "+@all")
        base = f"127.0.0.1:{redis_server.port}/0?namespace=auth"
        good = RedisBroker.from_url(f"redis://worker:{secret}@{base}")
        bad = RedisBroker.from_url(f"redis://worker:{wrong}@{base}")
        bad_client = bad._client
        assert isinstance(bad_client, aioredis.Redis)
        bad_client.get_retry().update_retries(0)  # a refusal is final; skip the backoff
        try:
            await good.enqueue([TaskMessage(id="a", type="t")])
            assert [le.task.id for le in await good.claim(["default"], limit=1, lease_s=5)] == ["a"]
            with pytest.raises(BrokerError) as info:
                await bad.enqueue([TaskMessage(id="b", type="t")])
        finally:
            await good.close()
            await bad.close()
    assert wrong not in str(info.value) and secret not in str(info.value)
    assert secret not in repr(good) and wrong not in repr(bad)


async def test_a_full_redis_refuses_writes_whole_and_workers_still_drain(tmp_path: Path) -> None:
    # maxmemory reached with noeviction: every script refused changes nothing, enqueues (async,
    # sync, many) fail with a BrokerError that says so, and workers still claim (scheduled tasks
    # too), renew their leases, record failures, release, recover lapsed leases and complete,
    # which frees memory.
    with Fleet() as fleet:
        process = fleet.add(server(tmp_path / "full", "--maxmemory-policy", "noeviction"))
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{process.port}/0")

        def message(**fields: Any) -> TaskMessage:
            big = b'"' + b"x" * 4000 + b'"'
            return TaskMessage(id=str(new_task_id()), type="t", payload=big, **fields)

        try:
            # Due in a moment: claiming them means moving them out of the scheduled set first.
            kept = [message(queue="later", process_in_s=0.05, retention_s=3600) for _ in range(5)]
            await broker.enqueue(kept)
            lapsing = message(queue="lapsing")
            await broker.enqueue([lapsing])
            [short] = await broker.claim(["lapsing"], limit=1, lease_s=0.2)
            with process.client() as admin:
                admin.config_set("maxmemory", admin.info("memory")["used_memory"] + 2_000_000)
            acked = 0
            with pytest.raises(BrokerError, match="out of memory") as refused:
                for _ in range(10_000):  # 2 MB fills after about 400
                    await broker.enqueue([message()])
                    acked += 1
            assert not isinstance(refused.value, BrokerUnavailableError)
            assert "changed nothing" in str(refused.value)
            with process.client() as admin:  # well over the limit, whatever memory does next
                admin.config_set("maxmemory", admin.info("memory")["used_memory"] - 200_000)
            with pytest.raises(BrokerError, match="out of memory"):
                await broker.enqueue([message() for _ in range(10)])
            with Client(broker) as client, pytest.raises(BrokerError, match="out of memory"):
                client.enqueue(Task("t", "y" * 4000))
            assert (await broker.queue_stats("default")).pending == acked

            async def scheduled_claimed() -> list[Lease]:
                return await broker.claim(["later"], limit=5, lease_s=30)

            later = await eventually(scheduled_claimed)
            assert len(later) == 5
            assert await broker.extend_leases(later, 60) == [True] * 5

            async def recovered() -> int:
                return await broker.recover_expired(delay_s=0)

            assert await eventually(recovered) == 1  # once the 0.2 s lease has lapsed
            assert (await broker.get_task("lapsing", short.task.id)).state is TaskState.RETRY
            failing, dead, unstarted = await broker.claim(["default"], limit=3, lease_s=30)
            await broker.retry(failing, error="boom " * 800, delay_s=60)  # a long error text
            await broker.archive(dead, error="gave up")
            await broker.release(unstarted)
            retried = await broker.get_task("default", failing.task.id)
            assert (retried.state, retried.retried) == (TaskState.RETRY, 1)  # not a crash
            assert (await broker.get_task("default", dead.task.id)).state is TaskState.ARCHIVED
            leases = [*later, *await broker.claim(["default"], limit=50, lease_s=30)]
            assert unstarted.task.id in {lease.task.id for lease in leases}  # back at the front
            done = await broker.complete(
                [Completion(lease=lease, result=b'"r"' * 100) for lease in leases]
            )
            assert done == [True] * 55
            # The five retained their results (the first write of such a completion needs memory).
            assert (await broker.queue_stats("later")).completed == 5
            assert (await broker.queue_stats("default")).pending == acked - 52
            with process.client() as admin:
                admin.config_set("maxmemory", 0)
            await broker.enqueue([message()])
            assert (await broker.queue_stats("default")).pending == acked - 51
        finally:
            await broker.close()
