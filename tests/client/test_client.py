"""AsyncClient and Client against real brokers (memory, SQLite, Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor import (
    DEFAULT_TIMEOUT,
    AsyncClient,
    Broker,
    BrokerUnavailableError,
    Client,
    ConfigError,
    DuplicateTaskError,
    InvalidNameError,
    PayloadError,
    PayloadTooLargeError,
    Task,
    TaskIdConflictError,
    TaskInfo,
    TaskState,
)
from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.protocol import BlockingEnqueue
from conveyor.message import TaskMessage


async def test_enqueue_applies_documented_defaults(broker: Broker) -> None:
    async with AsyncClient(broker) as client:
        info = await client.enqueue(Task("email:welcome", {"user_id": 42}))
    assert info.state is TaskState.PENDING
    assert (info.queue, info.type, info.max_retry) == ("default", "email:welcome", 25)
    assert info.timeout == DEFAULT_TIMEOUT
    assert info.payload == {"user_id": 42}
    assert (await broker.get_task("default", info.id)).payload == {"user_id": 42}


async def test_options_reach_the_stored_task(broker: Broker) -> None:
    deadline = datetime.now(UTC) + timedelta(hours=1)
    async with AsyncClient(broker) as client:
        info = await client.enqueue(
            Task("report:build", [1, 2]),
            queue="critical",
            max_retry=3,
            deadline=deadline,
            retention=timedelta(minutes=5),
        )
        timed = await client.enqueue(Task("report:build"), timeout=12.5)
    stored = await broker.get_task("critical", info.id)
    assert stored.max_retry == 3
    assert stored.timeout is None  # a deadline alone does not get the default timeout
    assert stored.deadline is not None and abs((stored.deadline - deadline).total_seconds()) < 1
    assert stored.retention == timedelta(minutes=5)
    assert timed.timeout == timedelta(seconds=12.5)


async def test_enqueue_in_and_at_schedule_the_task(broker: Broker) -> None:
    when = datetime.now(UTC) + timedelta(hours=2)
    async with AsyncClient(broker) as client:
        later = await client.enqueue_in(timedelta(minutes=10), Task("a.b"))
        at = await client.enqueue_at(when, Task("a.b"))
        now = await client.enqueue_in(0, Task("a.b"))
    assert later.state is TaskState.SCHEDULED
    assert at.state is TaskState.SCHEDULED
    assert at.next_process_at is not None
    assert abs((at.next_process_at - when).total_seconds()) < 1
    assert now.state is TaskState.PENDING
    assert (await broker.queue_stats("default")).scheduled == 2


async def test_custom_task_id_conflict(broker: Broker) -> None:
    async with AsyncClient(broker) as client:
        await client.enqueue(Task("a.b"), task_id="order-17")
        with pytest.raises(TaskIdConflictError):
            await client.enqueue(Task("a.b"), task_id="order-17")
        other = await client.enqueue(Task("a.b"), task_id="order-17", queue="other")
    assert other.id == "order-17"


async def test_unique_rejects_a_duplicate_of_type_payload_and_queue(broker: Broker) -> None:
    async with AsyncClient(broker) as client:
        first = await client.enqueue(Task("sync:user", {"id": 1}), unique=60)
        with pytest.raises(DuplicateTaskError):
            await client.enqueue(Task("sync:user", {"id": 1}), unique=timedelta(minutes=1))
        # A different payload, type or queue is a different task.
        await client.enqueue(Task("sync:user", {"id": 2}), unique=60)
        await client.enqueue(Task("sync:other", {"id": 1}), unique=60)
        await client.enqueue(Task("sync:user", {"id": 1}), unique=60, queue="low")
    assert first.unique_key is not None
    assert (await broker.queue_stats("default")).pending == 3


async def test_enqueue_many_is_all_or_nothing(broker: Broker) -> None:
    async with AsyncClient(broker) as client:
        infos = await client.enqueue_many([Task("a.b", i) for i in range(5)], queue="bulk")
        assert [i.payload for i in infos] == [0, 1, 2, 3, 4]
        with pytest.raises(PayloadError):
            await client.enqueue_many([Task("a.b", 1), Task("a.b", {1, 2})], queue="bulk")
        await client.enqueue(Task("a.b"), task_id="taken", queue="bulk")
        with pytest.raises(ConfigError, match="task_id"):
            await client.enqueue_many([Task("a.b", "x")], queue="bulk", task_id="taken")
        assert await client.enqueue_many([]) == []
    assert (await broker.queue_stats("bulk")).pending == 6


class CountingBroker(MemoryBroker):
    """A real MemoryBroker that counts enqueue calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    async def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        self.calls.append(len(messages))
        return await super().enqueue(messages)


async def test_enqueue_many_makes_one_broker_call() -> None:
    broker = CountingBroker()
    async with AsyncClient(broker) as client:
        await client.enqueue_many(Task("a.b", i) for i in range(100))
    assert broker.calls == [100]
    await broker.close()


async def test_bad_input_fails_at_the_boundary_and_stores_nothing(broker: Broker) -> None:
    async with AsyncClient(broker, max_payload_bytes=100) as client:
        with pytest.raises(TypeError, match="'queu'"):
            await client.enqueue(Task("a.b"), queu="x")  # type: ignore[call-arg]
        with pytest.raises(ConfigError, match="timeout"):
            await client.enqueue(Task("a.b"), timeout=-1)
        with pytest.raises(ConfigError, match="process_in"):
            await client.enqueue(Task("a.b"), process_in=timedelta(seconds=-5))
        with pytest.raises(InvalidNameError, match="queue"):
            await client.enqueue(Task("a.b"), queue="bad queue!")
        with pytest.raises(ValueError, match="max_retry"):
            await client.enqueue(Task("a.b"), max_retry=-1)
        with pytest.raises(PayloadError, match=r"payload\['when'\] is a datetime") as exc:
            await client.enqueue(Task("a.b", {"when": datetime.now(UTC)}))
        assert isinstance(exc.value, TypeError)
        with pytest.raises(PayloadTooLargeError):
            await client.enqueue(Task("a.b", "x" * 200))
        with pytest.raises(TypeError, match="process_in"):
            await client.enqueue_in(5, Task("a.b"), process_in=3)
        with pytest.raises(ConfigError):
            await client.enqueue(Task("a.b"), process_in=1, process_at=datetime.now(UTC))
        with pytest.raises(TypeError, match=r"conveyor\.Task"):
            await client.enqueue("a.b")  # type: ignore[arg-type]
    assert await broker.list_queues() == []


async def test_default_options_layer_client_type_call(broker: Broker) -> None:
    async with AsyncClient(broker, queue="low", max_retry=5) as client:
        client.set_default_options("email:send", queue="emails", timeout=30)
        plain = await client.enqueue(Task("report:build"))
        email = await client.enqueue(Task("email:send"))
        override = await client.enqueue(Task("email:send"), queue="critical")
        with pytest.raises(TypeError, match="task_id"):
            client.set_default_options("email:send", task_id="x")  # type: ignore[call-arg]
    assert (plain.queue, plain.max_retry) == ("low", 5)
    assert (email.queue, email.max_retry, email.timeout) == ("emails", 5, timedelta(seconds=30))
    assert override.queue == "critical"


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="unsupported") as exc:
        Client("postgres://user:s3cret@host/db")
    assert "s3cret" not in str(exc.value)
    with pytest.raises(TypeError, match="unknown task option 'retries'"):
        Client("memory://", retries=3)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="max_payload_bytes"):
        AsyncClient("memory://", max_payload_bytes=0)
    with pytest.raises(TypeError):
        AsyncClient(42)  # type: ignore[arg-type]


def test_sync_client_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with Client(url) as client:
        one = client.enqueue(Task("a.b", 1))
        later = client.enqueue_in(60, Task("a.b", 2))
        at = client.enqueue_at(datetime.now(UTC) + timedelta(hours=1), Task("a.b", 3))
        many = client.enqueue_many([Task("a.b", i) for i in range(50)], queue="bulk")
    assert one.state is TaskState.PENDING
    assert later.state is at.state is TaskState.SCHEDULED
    assert len(many) == 50
    # The data is on disk, seen by a new client.
    with Client(url) as again, pytest.raises(TaskIdConflictError):
        again.enqueue(Task("a.b"), task_id=one.id)


def test_sync_client_is_safe_across_threads_and_inside_async_code(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with Client(f"sqlite:///{tmp_path / 'q.db'}") as client:
        with ThreadPoolExecutor(4) as pool:
            infos = list(pool.map(lambda i: client.enqueue(Task("a.b", i)), range(40)))
        assert len({i.id for i in infos}) == 40

        async def from_async() -> TaskInfo:
            return client.enqueue(Task("a.b", "from async"))

        assert asyncio.run(from_async()).state is TaskState.PENDING
    with pytest.raises(BrokerUnavailableError, match="closed"):
        client.enqueue(Task("a.b"))


async def test_sync_client_on_every_broker(broker: Broker) -> None:
    # SQLite and Redis take the broker's enqueue_blocking, the memory broker the private loop.
    assert isinstance(broker, BlockingEnqueue) is not isinstance(broker, MemoryBroker)
    client = Client(broker)
    try:
        one = client.enqueue(Task("a.b", 1))
        many = client.enqueue_many([Task("a.b", n) for n in range(5)], queue="bulk")
        later = client.enqueue_in(60, Task("a.b", 2))
        with pytest.raises(TaskIdConflictError):
            client.enqueue(Task("a.b"), task_id=one.id)
        with pytest.raises(DuplicateTaskError):
            client.enqueue_many([Task("a.b", "u"), Task("a.b", "u")], unique=60)
    finally:
        client.close()
    with pytest.raises(BrokerUnavailableError, match="closed"):
        client.enqueue(Task("a.b"))

    assert (await broker.get_task("default", one.id)).payload == 1
    assert [i.state for i in many] == [TaskState.PENDING] * 5
    assert (await broker.queue_stats("bulk")).pending == 5
    assert (await broker.get_task("default", later.id)).state is TaskState.SCHEDULED
    assert (await broker.queue_stats("default")).pending == 1  # the failed calls stored nothing


def test_sync_client_and_async_code_share_one_sqlite_broker(tmp_path: Path) -> None:
    # The sync client runs its SQLite work inline in its own thread; the async side goes through
    # the broker's database thread. Both use one connection, never at the same time.
    from concurrent.futures import ThreadPoolExecutor

    from conveyor.brokers.sqlite import SqliteBroker

    broker = SqliteBroker(tmp_path / "shared.db")

    async def consume(expected: int) -> int:
        claimed = 0
        while claimed < expected:
            leases = await broker.claim(["default"], limit=16, lease_s=30)
            claimed += len(leases)
            if not leases:
                await broker.wait_for_tasks(["default"], timeout_s=1.0)
        return claimed

    def produce(count: int) -> list[TaskInfo]:
        with Client(broker) as client:
            return [client.enqueue(Task("a.b", n)) for n in range(count)]

    with ThreadPoolExecutor(2) as pool:
        produced = [pool.submit(produce, 150) for _ in range(2)]
        assert asyncio.run(consume(300)) == 300
        assert sum(len(p.result()) for p in produced) == 300
    asyncio.run(broker.close())


def test_memory_url_is_shared_by_name_within_the_process() -> None:
    from conveyor import Inspector

    with (
        Client("memory://test-client-shared") as client,
        Inspector("memory://test-client-shared") as inspector,
    ):
        info = client.enqueue(Task("a.b", 1))
        assert inspector.get_task("default", info.id).payload == 1


def test_repr_hides_the_password() -> None:
    client = Client("redis://user:s3cret@127.0.0.1:6379/9")
    try:
        assert "s3cret" not in repr(client)
    finally:
        client.close()
