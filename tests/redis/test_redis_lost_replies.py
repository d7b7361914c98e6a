"""A reply lost on the network: the command is never sent again, the outcome is reported unknown.

redis-py's own retry would resend a script whose reply was lost, and no script can run twice
safely (a claim would lease a second batch, an enqueue would find its own task and call it a
conflict). The broker retries only failures to connect, when nothing was sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError
from redis_servers import Fleet, server

from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.base import CLOSE_CLEANUP_S
from conveyor.brokers.redis.connect import sent_nothing
from conveyor.errors import BrokerUnavailableError
from conveyor.message import Completion, TaskMessage, TaskState
from faultproxy import FaultProxy
from support import delete_namespace, eventually

pytestmark = pytest.mark.redis


@pytest.fixture
async def broker(redis_url: str, proxy: FaultProxy) -> AsyncIterator[RedisBroker]:
    """A broker that reaches Redis through the proxy, under its own namespace."""
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    parts = urlsplit(redis_url)
    proxied = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    redis_broker = RedisBroker.from_url(f"{proxied}?namespace={namespace}")
    yield redis_broker
    await redis_broker.close()
    await delete_namespace(redis_url, namespace)


async def test_a_claim_whose_reply_is_lost_runs_once_and_is_given_back_by_the_next(
    broker: RedisBroker, proxy: FaultProxy
) -> None:
    await broker.enqueue([TaskMessage(id=f"t{i}", type="x", queue="q") for i in range(4)])
    await broker.claim(["empty"], limit=1, lease_s=30)  # the server knows the script (no NOSCRIPT)
    proxy.lose_next_reply(b"EVALSHA")

    with pytest.raises(BrokerUnavailableError):
        await broker.claim(["q"], limit=2, lease_s=30)

    stats = await broker.queue_stats("q")
    assert (stats.active, stats.pending) == (2, 2)  # the lost claim ran once, not twice
    # The next claim first gives the lost batch back (to the front, nothing counted), then
    # claims: the tasks run now, not after their leases lapse.
    leases = await broker.claim(["q"], limit=4, lease_s=30)
    assert [le.task.id for le in leases] == ["t0", "t1", "t2", "t3"]
    assert all(le.task.retried == 0 for le in leases)
    assert (await broker.claim(["q"], limit=4, lease_s=30)) == []  # given back once only


async def test_concurrent_claims_give_a_lost_claim_back_once(
    broker: RedisBroker, proxy: FaultProxy
) -> None:
    await broker.enqueue([TaskMessage(id=f"t{i}", type="x", queue="q") for i in range(4)])
    await broker.claim(["empty"], limit=1, lease_s=30)
    proxy.lose_next_reply(b"EVALSHA")
    with pytest.raises(BrokerUnavailableError):
        await broker.claim(["q"], limit=2, lease_s=30)

    first, second = await asyncio.gather(
        broker.claim(["q"], limit=4, lease_s=30), broker.claim(["q"], limit=4, lease_s=30)
    )

    ids = [le.task.id for le in (*first, *second)]
    assert sorted(ids) == ["t0", "t1", "t2", "t3"]  # each once: none lost, none twice


async def test_claims_in_flight_together_keep_apart_receipts(
    broker: RedisBroker, proxy: FaultProxy
) -> None:
    # Two claims from one broker object, both led by "q", in flight at once: Redis runs the
    # first, whose reply is lost, then the second. Each has a receipt of its own, so the
    # second cannot overwrite the one the lost claim's tasks are given back by.
    await broker.enqueue([TaskMessage(id=f"t{i}", type="x", queue="q") for i in range(4)])
    await broker.claim(["empty"], limit=1, lease_s=30)  # the server knows the script
    proxy.hold_next_request(b"EVALSHA")
    second = asyncio.ensure_future(broker.claim(["q"], limit=2, lease_s=30))
    try:
        await eventually(_true_when(lambda: proxy.held == 1))  # sent; waits in the proxy
        proxy.lose_next_reply(b"EVALSHA")
        with pytest.raises(BrokerUnavailableError):
            await broker.claim(["q"], limit=2, lease_s=30)  # ran: t0 and t1 leased
        assert len(proxy.lost_replies) == 1
    finally:
        proxy.release()
    assert sorted(le.task.id for le in await second) == ["t2", "t3"]  # ran after the lost one
    assert (await broker.queue_stats("q")).active == 4

    # The next claim gives the lost claim's tasks back at once, not after their 30 s leases.
    leases = await broker.claim(["q"], limit=4, lease_s=30)
    assert [le.task.id for le in leases] == ["t0", "t1"]
    assert all(le.task.retried == 0 for le in leases)
    # One receipt key per claim in flight at once: later claims reuse them.
    assert (await broker.claim(["q"], limit=4, lease_s=30)) == []
    assert sorted(k.rsplit(":", 1)[1] for k in broker._receipts if ":{q}:" in k) == ["0", "1"]


@pytest.mark.parametrize("lease_s", [30.0, 2.0], ids=["short-wait", "wait-past-the-lease"])
async def test_a_lost_wait_and_claim_is_given_back(
    broker: RedisBroker, proxy: FaultProxy, redis_url: str, lease_s: float
) -> None:
    # The claim runs when the wait ends, so its receipt lasts `lease_s` from then, not from when
    # the wait began: a wait longer than the lease must not make the claim look expired.
    direct = RedisBroker.from_url(f"{redis_url}?namespace={broker.namespace}")
    try:
        await broker.claim(["empty"], limit=1, lease_s=30)  # no NOSCRIPT on the pipelined claim
        proxy.lose_next_reply(b"BLPOP")
        began = time.monotonic()
        waiting = asyncio.ensure_future(
            broker.wait_and_claim(["q"], limit=1, lease_s=lease_s, timeout_s=30)
        )
        await eventually(_true_when(lambda: proxy.request_seen))  # the BLPOP went out
        if lease_s < 30:  # wait past the lease before the task arrives
            past_lease = began + lease_s + 0.5
            await eventually(_true_when(lambda: time.monotonic() > past_lease), within=10)
        await direct.enqueue([TaskMessage(id="t0", type="x", queue="q")])
        with pytest.raises(BrokerUnavailableError):
            await waiting
        assert (await direct.queue_stats("q")).active == 1  # claimed, reply lost

        [lease] = await broker.claim(["q"], limit=1, lease_s=30)  # within the claim's lease
        assert lease.task.id == "t0" and lease.task.retried == 0
    finally:
        await direct.close()


async def test_unclaim_gives_back_only_its_own_claims_tasks_still_held(
    broker: RedisBroker, redis_url: str
) -> None:
    await broker.enqueue(
        [TaskMessage(id=f"t{i}", type="x", queue="q", retention_s=600) for i in range(3)]
    )
    done, kept, _ = await broker.claim(["q"], limit=3, lease_s=30)
    assert await broker.complete([Completion(lease=done)]) == [True]
    raw = aioredis.Redis.from_url(redis_url)
    try:
        [receipt] = [k async for k in raw.scan_iter(match=f"{broker.namespace}:claimed:*")]
        claim_id = (await raw.get(receipt)).split()[0].decode()
    finally:
        await raw.aclose()
    claim_keys = [*broker._keys("q").block, receipt.decode()]

    assert await broker._run("unclaim", claim_keys, ["another-claim"]) == 0  # not its claim
    assert (await broker.queue_stats("q")).active == 2
    assert await broker._run("unclaim", claim_keys, [claim_id]) == 2  # t0 is completed
    assert await broker._run("unclaim", claim_keys, [claim_id]) == 0  # safe to repeat
    stats = await broker.queue_stats("q")
    assert (stats.active, stats.pending, stats.completed) == (0, 2, 1)
    assert await broker.complete([Completion(lease=kept)]) == [False]  # its lease is gone


async def test_a_completion_whose_reply_is_lost_is_reported_unknown(
    broker: RedisBroker, proxy: FaultProxy
) -> None:
    await broker.enqueue(
        [TaskMessage(id=f"t{i}", type="x", queue="q", retention_s=3600) for i in range(2)]
    )
    warm, lease = await broker.claim(["q"], limit=2, lease_s=30)
    assert await broker.complete([Completion(lease=warm)]) == [True]  # the server knows the script
    proxy.lose_next_reply(b"EVALSHA")

    with pytest.raises(BrokerUnavailableError):  # not [False]: the lease was not lost
        await broker.complete([Completion(lease=lease)])

    assert (await broker.get_task("q", lease.task.id)).state is TaskState.COMPLETED


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "sync"])
async def test_an_enqueue_whose_reply_is_lost_stores_the_task_once(
    broker: RedisBroker, proxy: FaultProxy, blocking: bool
) -> None:
    message = TaskMessage(id="new", type="x", queue="q")
    await broker.enqueue([TaskMessage(id="warm", type="x", queue="q")])  # no NOSCRIPT then
    if blocking:
        await asyncio.to_thread(broker.enqueue_blocking, [TaskMessage(id="warm2", type="x")])
    proxy.lose_next_reply(b"EVALSHA")

    with pytest.raises(BrokerUnavailableError):  # not TaskIdConflictError for its own task
        if blocking:
            await asyncio.to_thread(broker.enqueue_blocking, [message])
        else:
            await broker.enqueue([message])

    assert (await broker.get_task("q", "new")).state is TaskState.PENDING
    assert (await broker.queue_stats("q")).pending == 2


def _true_when(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


def test_only_failures_to_connect_count_as_nothing_sent() -> None:
    # redis-py's wording for a failed connect, and for a reply that never came.
    assert sent_nothing(RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. refused."))
    assert not sent_nothing(RedisConnectionError("Connection closed by server."))
    # No Sentinel named the primary: only the Sentinels were asked, unless they refused auth.
    for no_primary in (MasterNotFoundError, AsyncMasterNotFoundError):
        assert sent_nothing(no_primary("No master found for 'm'"))
        refused = "No master found for 'm' : <Redis...> - AuthenticationError('invalid')"
        assert not sent_nothing(no_primary(refused))


async def test_close_deletes_the_receipts_and_does_not_wait_for_a_redis_that_is_gone(
    tmp_path: Path,
) -> None:
    with Fleet() as fleet:
        redis_server = fleet.add(server(tmp_path / "data"))
        url = f"redis://127.0.0.1:{redis_server.port}/0?namespace=rc"
        for gone in (False, True):
            broker = RedisBroker.from_url(url)
            await broker.enqueue([TaskMessage(id="t", type="x", queue="q")])
            [lease] = await broker.claim(["q"], limit=1, lease_s=30)
            await broker.complete([Completion(lease=lease)])
            with redis_server.client() as c:
                assert len(c.keys("rc:claimed:*")) == 1
            if gone:
                redis_server.kill()
            async with asyncio.timeout(CLOSE_CLEANUP_S + 2.0):  # not the ~4.5 s of reconnecting
                await broker.close()
            if not gone:
                with redis_server.client() as c:
                    assert c.keys("rc:claimed:*") == []


BUSY_LUA = """
local s = redis.call('TIME')
repeat
  local n = redis.call('TIME')
until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > tonumber(ARGV[1])
"""


async def test_a_claim_cancelled_after_it_was_sent_is_given_back_at_close(tmp_path: Path) -> None:
    with Fleet() as fleet:
        redis_server = fleet.add(server(tmp_path / "data"))
        url = f"redis://127.0.0.1:{redis_server.port}/0?namespace=cc"
        broker = RedisBroker.from_url(url)
        await broker.enqueue([TaskMessage(id="t", type="x", queue="q")])
        await broker.claim(["empty"], limit=1, lease_s=30)  # the server knows the script
        # Connected now, and never retried: a PING during the script times out instead of
        # waiting to reconnect.
        probe = redis.Redis(
            port=redis_server.port, socket_timeout=0.05, retry=Retry(NoBackoff(), 0)
        )
        probe.ping()
        with redis_server.client() as busy, probe:
            # The server runs a 1 s script, so the claim waits unread in its socket; when it
            # is cancelled (as a worker's shutdown cancels a hung claim) its connection closes,
            # and Redis still runs it once the busy script ends.
            blocker = asyncio.ensure_future(asyncio.to_thread(busy.eval, BUSY_LUA, 0, 1_000_000))
            await eventually(_true_when(lambda: _busy(probe)))
            claim = asyncio.ensure_future(broker.claim(["q"], limit=1, lease_s=30))
            for _ in range(5):  # let it send
                await asyncio.sleep(0)
            claim.cancel()
            try:
                held = await claim
            except asyncio.CancelledError:
                held = None
            await blocker
        direct = RedisBroker.from_url(url)
        try:
            if held is not None:  # redis-py 7.0 finishes a cancelled read: the caller holds it
                assert [le.task.id for le in held] == ["t"]
                return
            assert (await direct.queue_stats("q")).active == 1  # it ran, and no one holds it
            await broker.close()  # gives it back
            stats = await direct.queue_stats("q")
            assert (stats.active, stats.pending) == (0, 1)
        finally:
            await direct.close()
            await broker.close()


def _busy(probe: redis.Redis) -> bool:
    """Whether the server is busy in a script: ``probe`` (connected before) gets no PONG."""
    try:
        probe.ping()
    except redis.exceptions.TimeoutError:
        return True
    return False
