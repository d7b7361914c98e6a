"""Leases: renewal keeps long tasks, lost leases cancel handlers, recovery, janitor, outages."""

from __future__ import annotations

import asyncio
import threading
import time

from conveyor.brokers import open_broker
from conveyor.brokers.protocol import Broker
from conveyor.errors import TaskNotFoundError
from conveyor.message import JSONValue, Task, TaskState
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from support import eventually
from worker.harness import BlockingHandler, FaultyBroker, enqueue, fast, serving, wait_for_state


async def _recover_until(broker: Broker, done: threading.Event) -> int:
    """Act as another worker's recoverer while the handler runs; return how many it took."""
    recovered = 0
    while not done.is_set():
        recovered += await broker.recover_expired(delay_s=0)
        await asyncio.sleep(0.02)
    return recovered


async def test_renewal_thread_keeps_a_loop_blocking_task_leased(
    broker_url: str, url_broker: Broker
) -> None:
    finished = threading.Event()
    runs = 0

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        nonlocal runs
        runs += 1
        # Blocks the server's event loop for three leases: only a renewal thread can keep it.
        time.sleep(1.5)
        finished.set()
        return "survived"

    server = Server(broker_url, **fast(lease=0.5, renew_interval=0.1, recover_interval=60))
    await asyncio.to_thread(server.start, handler)
    try:
        message = await enqueue(url_broker, retention_s=60)
        recovered = await _recover_until(url_broker, finished)
        info = await wait_for_state(url_broker, message, TaskState.COMPLETED)
    finally:
        await asyncio.to_thread(server.stop)
    assert recovered == 0
    assert runs == 1
    assert info.result == "survived"
    assert info.retried == 0


def _recover_in_thread(url: str, done: threading.Event) -> tuple[threading.Thread, list[int]]:
    """Another worker's recoverer, on its own thread and connection (this loop will block)."""
    counts: list[int] = []

    async def scan() -> None:
        other = open_broker(url)
        try:
            counts.append(await _recover_until(other, done))
        finally:
            await other.close()

    thread = threading.Thread(target=asyncio.run, args=(scan(),), daemon=True)
    thread.start()
    return thread, counts


async def test_renewal_on_the_main_loop_is_starved_by_a_blocking_handler(
    broker_url: str, url_broker: Broker
) -> None:
    """The negative control for the test above: given a Broker object, renewal shares the loop."""
    finished = threading.Event()

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        if ctx.retry_count == 0:
            time.sleep(1.0)  # blocks renewal on this loop for over three leases
            finished.set()
        return None

    server = Server(url_broker, **fast(lease=0.3, renew_interval=0.1, recover_interval=60))
    async with serving(server, handler):
        # The recoverer starts first: an idle worker claims the task within the enqueue's own
        # round trip, and its handler then blocks this loop before enqueue() returns here.
        thread, counts = _recover_in_thread(broker_url, finished)
        message = await enqueue(url_broker, max_retry=3)
        await asyncio.to_thread(thread.join, 10)

        async def gone() -> bool:
            try:
                await url_broker.get_task(message.queue, message.id)
            except TaskNotFoundError:
                return server.stats.succeeded == 1
            return False

        await eventually(gone)
    assert counts == [1]
    # The zombie's completion was refused and counted; the recovered attempt completed.
    assert server.stats.lease_lost == 1


async def test_lost_lease_cancels_an_async_handler_and_reports_nothing(broker: Broker) -> None:
    faulty = FaultyBroker(broker)
    handler = BlockingHandler()

    server = Server(faulty, **fast(renew_interval=0.1, recover_interval=60))
    async with serving(server, handler):
        message = await enqueue(broker, max_retry=5)
        await asyncio.wait_for(handler.started.wait(), 5)
        faulty.lose_leases = True
        await asyncio.wait_for(handler.cancelled.wait(), 5)

        async def counted() -> bool:
            return server.stats.lease_lost == 1 and server.stats.claimed == 1

        await eventually(counted)
        info = await broker.get_task(message.queue, message.id)
    # No outcome was reported: the task is still ACTIVE, left to the broker's recovery.
    assert info.state is TaskState.ACTIVE
    assert info.retried == 0
    stats = server.stats
    assert (stats.failed, stats.retried, stats.archived, stats.released) == (0, 0, 0, 0)


async def test_lost_lease_signals_a_sync_handler_and_ignores_its_result(broker: Broker) -> None:
    faulty = FaultyBroker(broker)
    started = threading.Event()
    saw_cancel: list[bool] = []

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        started.set()
        saw_cancel.append(ctx.cancel_event.wait(10))
        return "finished anyway"

    server = Server(faulty, **fast(renew_interval=0.1, recover_interval=60))
    async with serving(server, handler):
        message = await enqueue(broker, retention_s=60)
        await asyncio.to_thread(started.wait, 5)
        faulty.lose_leases = True

        async def cancelled() -> bool:
            return bool(saw_cancel) and server.stats.lease_lost == 1

        await eventually(cancelled)
        info = await broker.get_task(message.queue, message.id)
    assert saw_cancel == [True]
    assert info.state is TaskState.ACTIVE
    assert info.result is None
    assert server.stats.succeeded == 0


async def test_retry_under_a_lost_lease_is_refused_and_counted(broker: Broker) -> None:
    faulty = FaultyBroker(broker)
    faulty.skip_renewals = True
    go = asyncio.Event()
    attempts: list[int] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        attempts.append(ctx.retry_count)
        if ctx.retry_count == 0:
            await go.wait()
            raise ValueError("failed after losing the lease")
        return "second attempt"

    server = Server(faulty, **fast(lease=0.3, renew_interval=0.1, recover_interval=60))
    async with serving(server, handler):
        message = await enqueue(broker, max_retry=5, retention_s=60)

        async def taken_over() -> int:
            return await broker.recover_expired(delay_s=0)

        await eventually(taken_over)
        faulty.skip_renewals = False
        go.set()
        info = await wait_for_state(broker, message, TaskState.COMPLETED)

        async def counted() -> bool:
            return server.stats.lease_lost == 1

        await eventually(counted)
    assert attempts == [0, 1]
    assert info.result == "second attempt"
    assert info.retried == 1
    assert info.last_error == "lease expired (worker lost)"
    assert server.stats.retried == 0


async def test_recoverer_brings_back_a_dead_workers_task(broker: Broker) -> None:
    seen: list[int] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        seen.append(ctx.retry_count)
        return "recovered"

    message = await enqueue(broker, max_retry=3, retention_s=60)
    # A worker claims the task and dies: its lease runs out and nobody renews it.
    (lease,) = await broker.claim(["default"], limit=1, lease_s=0.2)
    server = Server(broker, **fast(recover_interval=0.05, recover_delay=0))
    async with serving(server, handler):
        info = await wait_for_state(broker, message, TaskState.COMPLETED)
    assert lease.task.id == message.id
    assert seen == [1]
    assert info.result == "recovered"
    assert server.stats.recovered >= 1


async def test_janitor_purges_expired_results(broker: Broker) -> None:
    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return "short-lived"

    server = Server(broker, **fast(janitor_interval=0.05))
    async with serving(server, handler):
        message = await enqueue(broker, retention_s=0.2)

        async def purged() -> bool:
            try:
                await broker.get_task(message.queue, message.id)
            except TaskNotFoundError:
                return server.stats.succeeded == 1
            return False

        await eventually(purged)
    assert server.stats.purged >= 1


async def test_claims_failing_for_a_while_do_not_stop_the_worker(broker: Broker) -> None:
    faulty = FaultyBroker(broker)
    faulty.claim_failures = 3

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return "after the outage"

    server = Server(faulty, **fast())
    async with serving(server, handler):
        message = await enqueue(broker, retention_s=60)
        info = await wait_for_state(broker, message, TaskState.COMPLETED)
    assert info.result == "after the outage"
    assert faulty.claims_failed == 3
    assert server.stats.broker_errors >= 3


async def test_broker_down_at_start_delays_readiness_but_not_for_ever(broker: Broker) -> None:
    faulty = FaultyBroker(broker)
    faulty.describe_failures = 2

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return "started late"

    async with serving(Server(faulty, **fast()), handler):
        message = await enqueue(broker, retention_s=60)
        info = await wait_for_state(broker, message, TaskState.COMPLETED)
    assert faulty.describe_failures == 0
    assert info.result == "started late"


async def test_idle_worker_is_woken_by_a_new_task_not_by_polling(broker: Broker) -> None:
    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return "woken"

    # A 60 s poll interval: only the broker's wake-up can start the task within the wait below.
    async with serving(Server(broker, **fast(poll_interval=60)), handler):
        first = await enqueue(broker, retention_s=60)
        await wait_for_state(broker, first, TaskState.COMPLETED)
        second = await enqueue(broker, retention_s=60)
        info = await wait_for_state(broker, second, TaskState.COMPLETED, within=5)
    assert info.result == "woken"
