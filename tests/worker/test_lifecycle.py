"""Server lifecycle: graceful shutdown, background thread, run() with signals, readiness."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import uuid

import pytest

from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.protocol import Broker
from conveyor.errors import ConfigError
from conveyor.message import JSONValue, Task, TaskState
from conveyor.worker.context import TaskContext
from conveyor.worker.server import READY_MESSAGE, Server
from support import eventually, wait_until
from worker.harness import BlockingHandler, enqueue, fast, serving, wait_for_state


async def test_shutdown_releases_an_unfinished_task_without_a_failure(broker: Broker) -> None:
    handler = BlockingHandler()

    server = Server(broker, **fast(shutdown_timeout=0.2))
    async with serving(server, handler):
        message = await enqueue(broker, max_retry=5)
        await asyncio.wait_for(handler.started.wait(), 5)
    assert handler.cancelled.is_set()
    info = await broker.get_task(message.queue, message.id)
    assert info.state is TaskState.PENDING
    assert (info.retried, info.last_error) == (0, None)
    stats = server.stats
    assert (stats.released, stats.failed) == (1, 0)


async def test_shutdown_abandons_and_releases_a_stuck_sync_handler(broker: Broker) -> None:
    started = threading.Event()
    finish = threading.Event()

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        started.set()
        finish.wait(10)  # ignores cancel_event: the worker must not wait for it
        return None

    server = Server(broker, **fast(shutdown_timeout=0.2))
    try:
        async with serving(server, handler):
            message = await enqueue(broker, max_retry=5)
            await asyncio.to_thread(started.wait, 5)
    finally:
        finish.set()
    info = await broker.get_task(message.queue, message.id)
    assert info.state is TaskState.PENDING
    assert info.retried == 0
    assert server.stats.released == 1
    assert server.stats.abandoned_threads == 1


async def test_shutdown_gives_a_sync_handler_its_whole_cancel_grace(broker: Broker) -> None:
    started = threading.Event()
    returned = threading.Event()

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        started.set()
        ctx.cancel_event.wait(10)
        # A last step longer than the default grace and than the shutdown's own second.
        threading.Event().wait(1.5)
        returned.set()
        return None

    server = Server(broker, **fast(shutdown_timeout=0.1, sync_cancel_grace=30))
    async with serving(server, handler):
        message = await enqueue(broker, max_retry=5)
        await asyncio.to_thread(started.wait, 5)
    assert returned.is_set()
    info = await broker.get_task(message.queue, message.id)
    assert (info.state, info.retried) == (TaskState.PENDING, 0)
    assert (server.stats.released, server.stats.abandoned_threads) == (1, 0)


async def test_shutdown_waits_for_a_task_that_finishes_in_time(broker: Broker) -> None:
    started = asyncio.Event()
    go = asyncio.Event()

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        started.set()
        await go.wait()
        return "finished during shutdown"

    server = Server(broker, **fast(shutdown_timeout=10))
    serve = asyncio.create_task(server.serve(handler))
    message = await enqueue(broker, retention_s=60)
    await asyncio.wait_for(started.wait(), 5)
    server.request_stop()

    async def stopped_fetching() -> bool:
        return not server.fetching

    await eventually(stopped_fetching)
    go.set()
    await server.shutdown()
    await serve
    info = await broker.get_task(message.queue, message.id)
    assert info.state is TaskState.COMPLETED
    assert info.result == "finished during shutdown"
    assert server.stats.released == 0


async def test_stop_fetching_leaves_new_tasks_pending(broker: Broker) -> None:
    ran: list[object] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        ran.append(task.payload)
        return None

    server = Server(broker, **fast())
    async with serving(server, handler):
        first = await enqueue(broker, "job", 1, retention_s=60)
        await wait_for_state(broker, first, TaskState.COMPLETED)
        server.stop_fetching()

        async def paused() -> bool:
            return not server.fetching

        await eventually(paused)
        second = await enqueue(broker, "job", 2)
    assert ran == [1]
    info = await broker.get_task(second.queue, second.id)
    assert info.state is TaskState.PENDING


async def test_ready_and_broker_description_are_logged(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.worker")

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return None

    async with serving(Server(broker, **fast()), handler):
        pass
    messages = [r.getMessage() for r in caplog.records]
    ready = [m for m in messages if READY_MESSAGE in m]
    assert len(ready) == 1
    assert f"pid {os.getpid()}" in ready[0]
    described = (await broker.describe()).backend
    assert any(m.startswith(f"broker: {described} at ") for m in messages)


async def test_start_and_stop_run_the_server_on_a_thread() -> None:
    name = f"memory://start-{uuid.uuid4().hex[:8]}"
    client = MemoryBroker.from_url(name)
    threads: list[str] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        threads.append(threading.current_thread().name)
        return "ok"

    server = Server(name, **fast())
    await asyncio.to_thread(server.start, handler)
    try:
        assert server.ready
        message = await enqueue(client, retention_s=60)
        info = await wait_for_state(client, message, TaskState.COMPLETED)
    finally:
        await asyncio.to_thread(server.stop)
    assert info.result == "ok"
    assert threads == ["conveyor-server"]
    assert not server.ready
    with pytest.raises(RuntimeError):
        server.start(handler)
    await client.close()


def test_start_raises_what_kept_the_server_from_starting() -> None:
    server = Server("memory://name/with-a-path", **fast())

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return None

    with pytest.raises(ConfigError):
        server.start(handler)


def test_unsupported_broker_url_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError):
        Server("ftp://example.com/queue")


def test_broker_url_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"memory://env-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CONVEYOR_BROKER_URL", name)
    done = threading.Event()

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        done.set()
        return None

    server = Server(**fast())
    server.start(handler)
    try:
        asyncio.run(enqueue(MemoryBroker.from_url(name)))
        assert done.wait(5)
    finally:
        server.stop()


def test_run_off_the_main_thread_says_what_to_use_instead() -> None:
    raised: list[BaseException] = []

    def call() -> None:
        try:
            Server(MemoryBroker()).run(lambda ctx, task: None)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=10)
    assert len(raised) == 1 and isinstance(raised[0], ConfigError)
    assert "main thread" in str(raised[0]) and "start" in str(raised[0])


def test_run_handles_sigtstp_then_sigterm() -> None:
    name = f"memory://run-{uuid.uuid4().hex[:8]}"
    client = MemoryBroker.from_url(name)
    ran = threading.Event()
    outcome: dict[str, object] = {}

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        ran.set()
        return None

    server = Server(name, **fast())

    def drive() -> None:
        try:
            wait_until(lambda: server.ready)
            asyncio.run(enqueue(client))
            assert ran.wait(5)
            os.kill(os.getpid(), signal.SIGTSTP)
            wait_until(lambda: not server.fetching)
            outcome["late"] = asyncio.run(enqueue(client))
        finally:
            # Always end run(): SIGTERM is handled by the server once it is ready.
            wait_until(lambda: server.ready)
            os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    driver.start()
    server.run(handler)  # returns after the graceful shutdown SIGTERM triggers
    driver.join()
    late = outcome["late"]
    info = asyncio.run(client.get_task(late.queue, late.id))  # type: ignore[attr-defined]
    assert info.state is TaskState.PENDING
    assert server.stats.succeeded == 1


async def test_handler_swallowing_the_shutdown_cancel_is_still_released(broker: Broker) -> None:
    started = asyncio.Event()

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "pretends to have finished"  # swallowed: the outcome must still be ignored
        return None

    server = Server(broker, **fast(shutdown_timeout=0.1))
    async with serving(server, handler):
        message = await enqueue(broker, retention_s=60)
        await asyncio.wait_for(started.wait(), 5)
    info = await broker.get_task(message.queue, message.id)
    assert info.state is TaskState.PENDING
    assert info.result is None
    assert (server.stats.released, server.stats.succeeded) == (1, 0)
