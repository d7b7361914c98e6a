"""Live workers, cancellation and lifecycle signals, on a real server over every broker."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading

import pytest

from conveyor.brokers.protocol import Broker
from conveyor.brokers.workers import WorkerRegistry
from conveyor.errors import TaskNotActiveError, TaskNotFoundError
from conveyor.inspector import AsyncInspector
from conveyor.message import JSONValue, Task, TaskState
from conveyor.signals import TaskEvent, TaskEventKind
from conveyor.worker.context import TaskContext
from conveyor.worker.registration import conveyor_version
from conveyor.worker.server import Server
from support import eventually
from worker.harness import BlockingHandler, enqueue, fast, serving, wait_for_state


async def test_a_serving_worker_is_listed_with_its_tasks_and_gone_after_stop(
    broker: Broker,
) -> None:
    handler = BlockingHandler()
    inspector = AsyncInspector(broker)
    server = Server(broker, **fast(queues={"critical": 6, "default": 3}, lease=1.5))
    async with serving(server, handler):
        [listed] = await inspector.list_workers()
        assert (listed.id, listed.host, listed.pid) == (
            server.worker_id,
            socket.gethostname(),
            os.getpid(),
        )
        assert dict(listed.queues) == {"critical": 6, "default": 3}
        assert (listed.concurrency, listed.version) == (4, conveyor_version())
        message = await enqueue(broker, max_retry=5)
        await asyncio.wait_for(handler.started.wait(), 5)

        async def shows_task() -> bool:
            [worker] = await inspector.list_workers()
            return worker.active == (message.id,)

        await eventually(shows_task)  # refreshed with the heartbeat (every 0.5 s here)
    assert await inspector.list_workers() == []


async def test_cancel_stops_an_async_handler_and_archives_the_task(broker: Broker) -> None:
    handler = BlockingHandler()
    inspector = AsyncInspector(broker)
    server = Server(broker, **fast())
    async with serving(server, handler):
        message = await enqueue(broker, max_retry=5)
        await asyncio.wait_for(handler.started.wait(), 5)

        await inspector.cancel_task(message.queue, message.id)

        await asyncio.wait_for(handler.cancelled.wait(), 5)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert (info.last_error, info.retried) == ("cancelled", 1)
    assert (server.stats.failed, server.stats.archived, server.stats.retried) == (1, 1, 0)


async def test_cancel_sets_a_sync_handlers_cancel_event(broker: Broker) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        started.set()
        if ctx.cancel_event.wait(10):  # a sync handler stops only where it looks
            saw_cancel.set()
        return None

    inspector = AsyncInspector(broker)
    server = Server(broker, **fast())
    async with serving(server, handler):
        message = await enqueue(broker, max_retry=5)
        await asyncio.to_thread(started.wait, 5)

        await inspector.cancel_task(message.queue, message.id)

        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
        assert await asyncio.to_thread(saw_cancel.wait, 5)
    # Abandoned or not depends on whether the thread returned before the cancel reached it.
    assert (info.last_error, server.stats.archived) == ("cancelled", 1)


async def test_a_sync_handler_that_checks_ctx_cancelled_returns_and_frees_its_thread(
    broker: Broker,
) -> None:
    started = threading.Event()
    returned = threading.Event()
    threads: list[str] = []

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        threads.append(threading.current_thread().name)
        if task.type == "after":
            return None
        started.set()
        while not ctx.cancelled:  # a long job, checking the signal between its steps
            ctx.cancel_event.wait(0.01)
        returned.set()
        return None

    inspector = AsyncInspector(broker)
    server = Server(broker, **fast(concurrency=1))
    async with serving(server, handler):
        message = await enqueue(broker, max_retry=5)
        await asyncio.to_thread(started.wait, 5)

        await inspector.cancel_task(message.queue, message.id)

        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
        assert returned.is_set()  # it returned before its outcome was recorded
        await enqueue(broker, "after")

        async def ran_next() -> bool:
            return len(threads) == 2

        await eventually(ran_next)
    # Ended as cancelled, not retried; its thread was not abandoned but ran the next task.
    assert (info.last_error, info.retried, server.stats.archived) == ("cancelled", 1, 1)
    [record] = (await inspector.get_task(message.queue, message.id)).history
    assert (record.attempt, record.error) == (1, "cancelled")
    assert server.stats.abandoned_threads == 0
    assert threads[0] == threads[1]


async def test_a_zero_sync_cancel_grace_abandons_a_handler_that_ignores_the_cancel(
    broker: Broker,
) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        if task.type == "after":
            ran.append(threading.current_thread().name)
            return None
        started.set()
        if ctx.cancel_event.wait(10):
            saw_cancel.set()
        release.wait(10)  # keeps going past the cancel: held until the test lets it go
        return None

    inspector = AsyncInspector(broker)
    # One slot: the next task can only run if the stuck thread was replaced.
    server = Server(broker, **fast(concurrency=1, sync_cancel_grace=0))
    try:
        async with serving(server, handler):
            message = await enqueue(broker, max_retry=5)
            await asyncio.to_thread(started.wait, 5)

            await inspector.cancel_task(message.queue, message.id)

            # Archived and its thread replaced while the handler is still held.
            info = await wait_for_state(broker, message, TaskState.ARCHIVED)
            assert server.stats.abandoned_threads == 1
            after = await enqueue(broker, "after", retention_s=60)
            await wait_for_state(broker, after, TaskState.COMPLETED)
    finally:
        release.set()
    assert saw_cancel.is_set()
    assert (info.last_error, server.stats.archived) == ("cancelled", 1)
    assert len(ran) == 1


async def test_a_longer_sync_cancel_grace_lets_a_slow_cooperative_handler_keep_its_thread(
    broker: Broker,
) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()
    finish_step = threading.Event()
    threads: list[str] = []

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        threads.append(threading.current_thread().name)
        if task.type == "after":
            return None
        started.set()
        ctx.cancel_event.wait(10)
        saw_cancel.set()
        finish_step.wait(10)  # a step that ends only when the test says so, then it returns
        return None

    inspector = AsyncInspector(broker)
    server = Server(broker, **fast(concurrency=1, sync_cancel_grace=30))
    try:
        async with serving(server, handler):
            message = await enqueue(broker, max_retry=5)
            await asyncio.to_thread(started.wait, 5)

            await inspector.cancel_task(message.queue, message.id)

            assert await asyncio.to_thread(saw_cancel.wait, 5)
            # Still within its grace: the attempt waits for the handler to return.
            assert server.stats.abandoned_threads == 0
            finish_step.set()
            info = await wait_for_state(broker, message, TaskState.ARCHIVED)
            after = await enqueue(broker, "after", retention_s=60)
            await wait_for_state(broker, after, TaskState.COMPLETED)
    finally:
        finish_step.set()
    assert (info.last_error, server.stats.archived) == ("cancelled", 1)
    assert server.stats.abandoned_threads == 0
    assert threads[0] == threads[1]  # the same thread ran the next task


async def test_cancel_refuses_tasks_that_are_not_running(broker: Broker) -> None:
    inspector = AsyncInspector(broker)
    message = await enqueue(broker)

    with pytest.raises(TaskNotActiveError):
        await inspector.cancel_task(message.queue, message.id)
    with pytest.raises(TaskNotFoundError):
        await inspector.cancel_task(message.queue, "missing")


async def test_signals_follow_each_attempt(broker: Broker) -> None:
    events: list[TaskEvent] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        if task.payload == "fail":
            raise RuntimeError("boom")
        return None

    server = Server(broker, **fast(concurrency=1))
    server.signals.connect_all(events.append)
    server.signals.task_started.connect(lambda event: 1 / 0)  # a broken receiver is skipped
    async with serving(server, handler):
        ok = await enqueue(broker, payload="ok")
        bad = await enqueue(broker, payload="fail", max_retry=1)
        await wait_for_state(broker, bad, TaskState.ARCHIVED)

        async def settled() -> bool:
            return len(events) == 8

        await eventually(settled)
    kinds = {(e.task_id, e.attempt, e.kind) for e in events}
    assert kinds == {
        (ok.id, 1, TaskEventKind.STARTED),
        (ok.id, 1, TaskEventKind.SUCCEEDED),
        (bad.id, 1, TaskEventKind.STARTED),
        (bad.id, 1, TaskEventKind.FAILED),
        (bad.id, 1, TaskEventKind.RETRIED),
        (bad.id, 2, TaskEventKind.STARTED),
        (bad.id, 2, TaskEventKind.FAILED),
        (bad.id, 2, TaskEventKind.ARCHIVED),
    }
    failed = [e for e in events if e.kind is TaskEventKind.FAILED]
    assert all(e.error == "RuntimeError: boom" and e.duration_s is not None for e in failed)
    assert all(e.task_type == "job" and e.queue == "default" for e in events)


def test_every_builtin_broker_keeps_the_registry(broker: Broker) -> None:
    assert isinstance(broker, WorkerRegistry)


async def test_app_signals_reach_its_clients_and_servers() -> None:
    from conveyor import App

    app = App("memory://signals-" + os.urandom(4).hex())

    @app.task(name="ops.noop")
    def noop() -> None: ...

    events: list[TaskEvent] = []
    app.signals.connect_all(events.append)
    server = app.server(**fast())
    async with serving(server, app.mux):
        info = await noop.aio.enqueue()

        async def done() -> bool:
            return any(e.kind is TaskEventKind.SUCCEEDED for e in events)

        await eventually(done)
    await app.aclose()
    assert server.signals is app.signals
    assert [e.kind for e in events] == [
        TaskEventKind.ENQUEUED,
        TaskEventKind.STARTED,
        TaskEventKind.SUCCEEDED,
    ]
    assert {e.task_id for e in events} == {info.id}


async def test_records_made_in_a_task_carry_its_fields() -> None:
    import logging

    from conveyor.brokers.memory import MemoryBroker
    from conveyor.logs import JsonFormatter, TaskContextFilter, TextFormatter

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    keep.addFilter(TaskContextFilter())
    user = logging.getLogger("user.tasks")
    user.addHandler(keep)
    user.setLevel(logging.INFO)

    async def async_handler(ctx: TaskContext, task: Task) -> JSONValue:
        user.info("async says hi")
        return None

    def sync_handler(ctx: TaskContext, task: Task) -> JSONValue:
        user.info("sync says hi")
        return None

    broker = MemoryBroker()
    try:
        for handler in (async_handler, sync_handler):
            async with serving(Server(broker, **fast()), handler):
                message = await enqueue(broker, "log:me", max_retry=3)

                async def logged(task_id: str = message.id) -> bool:
                    return any(getattr(r, "task_id", None) == task_id for r in records)

                await eventually(logged)
        user.info("outside any task")
    finally:
        user.removeHandler(keep)
        await broker.close()
    inside = [r for r in records if r.getMessage() != "outside any task"]
    assert [r.getMessage() for r in inside] == ["async says hi", "sync says hi"]
    for record in inside:
        fields = (record.task_type, record.queue, record.attempt)  # type: ignore[attr-defined]
        assert fields == ("log:me", "default", 1)
    outside = json.loads(JsonFormatter().format(records[-1]))
    assert "task_id" not in outside and outside["message"] == "outside any task"
    text = TextFormatter().format(inside[1])
    task_id = inside[1].task_id  # type: ignore[attr-defined]
    assert text.endswith(f"sync says hi [task log:me {task_id} queue=default attempt=1]")
    assert TextFormatter().format(records[-1]).endswith("user.tasks: outside any task")
    line = json.loads(JsonFormatter().format(inside[0]))
    assert (line["task_type"], line["attempt"], line["logger"]) == ("log:me", 1, "user.tasks")
