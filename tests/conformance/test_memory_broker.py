"""MemoryBroker-only behaviour: named shared state, URL forms, the injectable clock, threads."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from conformance.factories import QUEUE, claim_one, msg
from conveyor.brokers import open_broker
from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.protocol import LEASE_EXPIRED_ERROR, Broker
from conveyor.errors import BrokerUnavailableError, ConfigError
from conveyor.message import Completion, TaskState


class FakeClock:
    """A broker clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def unique_name() -> str:
    return f"test-{uuid.uuid4().hex}"


def test_memory_broker_fits_the_protocol() -> None:
    broker = MemoryBroker()

    assert isinstance(broker, Broker)
    assert broker.capabilities.shared_across_processes is False
    assert broker.capabilities.persistent is False


async def test_same_url_shares_queues_between_handles() -> None:
    name = unique_name()
    producer = MemoryBroker.from_url(f"memory://{name}")
    consumer = open_broker(f"memory://{name}")
    assert isinstance(consumer, MemoryBroker)

    [info] = await producer.enqueue([msg()])

    assert (await claim_one(consumer)).task.id == info.id
    assert (await producer.describe()).location == f"memory://{name}"


async def test_different_names_and_private_brokers_are_isolated() -> None:
    one = MemoryBroker.from_url(f"memory://{unique_name()}")
    await one.enqueue([msg()])

    for other in (MemoryBroker.from_url(f"memory://{unique_name()}"), MemoryBroker()):
        assert await other.claim([QUEUE], limit=1, lease_s=30) == []


async def test_bare_memory_url_is_the_empty_name() -> None:
    assert (await MemoryBroker.from_url("memory://").describe()).location == "memory://"
    assert (await MemoryBroker(name="").describe()).location == "memory://"


@pytest.mark.parametrize(
    "url", ["memory://x/path", "memory://x?a=1", "memory://x#frag", "sqlite:///x.db", "bogus://x"]
)
def test_malformed_memory_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        MemoryBroker.from_url(url)


async def test_closing_one_handle_leaves_the_others_working() -> None:
    name = unique_name()
    first, second = MemoryBroker(name=name), MemoryBroker(name=name)

    await first.close()
    await first.close()

    with pytest.raises(BrokerUnavailableError):
        await first.enqueue([msg()])
    assert len(await second.enqueue([msg()])) == 1


async def test_close_wakes_a_waiter_on_that_handle() -> None:
    broker = MemoryBroker()
    waiter = asyncio.create_task(broker.wait_for_tasks([QUEUE], 5.0))
    await asyncio.sleep(0)

    await broker.close()

    await asyncio.wait_for(waiter, timeout=2.0)
    assert waiter.done()


async def test_fake_clock_drives_scheduling() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    [info] = await broker.enqueue([msg(process_in_s=60)])
    assert info.next_process_at is not None
    assert info.next_process_at.timestamp() == clock.now + 60

    clock.now += 59.999
    assert await broker.claim([QUEUE], limit=1, lease_s=30) == []
    clock.now += 0.001
    assert (await claim_one(broker)).task.id == info.id


async def test_fake_clock_drives_lease_expiry() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    await broker.enqueue([msg()])
    lease = await claim_one(broker, lease_s=30)
    assert lease.expires_at == clock.now + 30

    clock.now += 30
    assert await broker.recover_expired(delay_s=5) == 0  # expiry must be strictly passed
    clock.now += 0.001
    assert await broker.recover_expired(delay_s=5) == 1

    task = await broker.get_task(QUEUE, lease.task.id)
    assert (task.state, task.last_error) == (TaskState.RETRY, LEASE_EXPIRED_ERROR)


async def test_daily_counts_follow_the_broker_clock_in_utc() -> None:
    clock = FakeClock(1_700_006_399.0)  # 2023-11-14 23:59:59 UTC
    broker = MemoryBroker(clock=clock)
    await broker.enqueue([msg()])
    await broker.archive(await claim_one(broker), error="boom")
    assert (await broker.queue_stats(QUEUE)).failed_today == 1

    clock.now += 1  # midnight UTC: a new day

    stats = await broker.queue_stats(QUEUE)
    assert (stats.processed_today, stats.failed_today, stats.archived) == (0, 0, 1)


async def test_purge_uses_the_broker_clock() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    await broker.enqueue([msg(retention_s=10)])

    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]
    clock.now += 9.999
    assert await broker.purge_expired() == 0
    clock.now += 0.001
    assert await broker.purge_expired() == 1


async def test_enqueue_from_another_thread_wakes_a_waiter() -> None:
    # A sync facade may run its own event loop in another thread against the same named broker.
    name = unique_name()
    broker = MemoryBroker(name=name)
    waiter = asyncio.create_task(broker.wait_for_tasks([QUEUE], 5.0))
    await asyncio.sleep(0)

    def produce() -> None:
        asyncio.run(MemoryBroker(name=name).enqueue([msg()]))

    thread = threading.Thread(target=produce)
    thread.start()
    await asyncio.wait_for(waiter, timeout=2.0)
    thread.join(timeout=2.0)

    assert len(await broker.claim([QUEUE], limit=1, lease_s=30)) == 1
