"""Running tasks: results, routing, sync handlers, the task context, unreadable payloads."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

from conveyor.brokers.protocol import Broker
from conveyor.errors import TaskNotFoundError
from conveyor.message import Encoding, JSONValue, Task, TaskState
from conveyor.middleware import CallNext
from conveyor.mux import ServeMux
from conveyor.worker.context import TaskContext, current_context
from conveyor.worker.server import Server
from support import eventually
from worker.harness import enqueue, fast, serving, wait_for_state


async def test_result_is_stored_for_a_retained_task(broker: Broker) -> None:
    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return {"sum": sum(task.payload)}

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, "add", [1, 2, 3], retention_s=60)
        info = await wait_for_state(broker, message, TaskState.COMPLETED)
    assert info.result == {"sum": 6}


async def test_completed_task_without_retention_is_deleted(broker: Broker) -> None:
    done = asyncio.Event()

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        done.set()
        return "ignored"

    server = Server(broker, **fast())
    async with serving(server, handler):
        message = await enqueue(broker)
        await asyncio.wait_for(done.wait(), 5)

        async def gone() -> bool:
            try:
                await broker.get_task(message.queue, message.id)
            except TaskNotFoundError:
                return True
            return False

        await eventually(gone)
    assert server.stats.succeeded == 1


async def test_many_tasks_complete_in_batches(broker: Broker) -> None:
    count = 0

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        nonlocal count
        count += 1
        return None

    server = Server(broker, **fast(concurrency=50))
    async with serving(server, handler):
        from conveyor.message import TaskMessage, new_task_id

        await broker.enqueue([TaskMessage(id=str(new_task_id()), type="job") for _ in range(300)])

        async def all_done() -> bool:
            return server.stats.succeeded == 300

        await eventually(all_done, within=15)
    assert count == 300
    stats = await broker.queue_stats("default")
    assert stats.pending == stats.active == 0


async def test_mux_routes_by_longest_prefix_with_middleware(broker: Broker) -> None:
    order: list[str] = []
    mux = ServeMux()

    @mux.handler("images:")
    async def images(ctx: TaskContext, task: Task) -> JSONValue:
        order.append("images")
        return "images"

    @mux.handler("images:thumbnails")
    def thumbnails(ctx: TaskContext, task: Task) -> JSONValue:
        order.append("thumbnails")
        return "thumbnails"

    async def tag(ctx: TaskContext, task: Task, call_next: CallNext) -> JSONValue:
        return f"tagged-{await call_next(ctx, task)}"

    mux.use(tag)
    async with serving(Server(broker, **fast()), mux):
        resize = await enqueue(broker, "images:resize", retention_s=60)
        thumb = await enqueue(broker, "images:thumbnails:small", retention_s=60)
        resized = await wait_for_state(broker, resize, TaskState.COMPLETED)
        thumbed = await wait_for_state(broker, thumb, TaskState.COMPLETED)
    assert resized.result == "tagged-images"
    assert thumbed.result == "tagged-thumbnails"
    assert sorted(order) == ["images", "thumbnails"]


async def test_sync_handler_runs_off_the_loop_and_does_not_block_it(broker: Broker) -> None:
    loop_thread = threading.get_ident()
    release = threading.Event()
    seen: dict[str, object] = {}
    async_ran = asyncio.Event()

    def blocking(ctx: TaskContext, task: Task) -> JSONValue:
        seen["thread"] = threading.get_ident()
        seen["context"] = current_context()
        release.wait(10)
        return "unblocked"

    async def quick(ctx: TaskContext, task: Task) -> JSONValue:
        async_ran.set()
        # The sync handler is still blocked in its thread, yet this one ran on the loop.
        release.set()
        return None

    mux = ServeMux()
    mux.handle("blocking", blocking)
    mux.handle("quick", quick)
    async with serving(Server(broker, **fast(concurrency=2)), mux):
        slow = await enqueue(broker, "blocking", retention_s=60)

        async def started() -> bool:
            return "thread" in seen

        await eventually(started)
        await enqueue(broker, "quick")
        await asyncio.wait_for(async_ran.wait(), 5)
        info = await wait_for_state(broker, slow, TaskState.COMPLETED)
    assert info.result == "unblocked"
    assert seen["thread"] != loop_thread
    context = seen["context"]
    assert isinstance(context, TaskContext)
    assert context.task_id == slow.id


async def test_current_context_describes_the_task(broker: Broker) -> None:
    seen: list[TaskContext] = []
    deadline = datetime.now(UTC) + timedelta(hours=1)

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        seen.append(current_context())
        assert current_context() is ctx
        return None

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(
            broker, "ctx:check", queue="default", max_retry=7, deadline=deadline.timestamp()
        )

        async def ran() -> bool:
            return bool(seen)

        await eventually(ran)
    ctx = seen[0]
    assert (ctx.task_id, ctx.queue, ctx.type) == (message.id, "default", "ctx:check")
    assert (ctx.retry_count, ctx.max_retry) == (0, 7)
    assert ctx.deadline is not None
    assert abs((ctx.deadline - deadline).total_seconds()) < 0.01
    assert not ctx.cancelled


async def test_plain_function_handler_without_mux(broker: Broker) -> None:
    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return task.payload * 2

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, "double", 21, retention_s=60)
        info = await wait_for_state(broker, message, TaskState.COMPLETED)
    assert info.result == 42


async def test_bytes_payload_reaches_the_handler_untouched(broker: Broker) -> None:
    seen: list[object] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        seen.append(task.payload)
        return None

    async with serving(Server(broker, **fast()), handler):
        await enqueue(broker, "raw", raw_payload=b"\x00\xffbinary", encoding=Encoding.BYTES)

        async def ran() -> bool:
            return bool(seen)

        await eventually(ran)
    assert seen == [b"\x00\xffbinary"]


async def test_undecodable_payload_is_archived_and_worker_carries_on(broker: Broker) -> None:
    ran: list[object] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        ran.append(task.payload)
        return None

    reported: list[tuple[object, str]] = []

    def on_error(ctx: TaskContext, task: Task, exc: BaseException) -> None:
        reported.append((task.payload, type(exc).__name__))

    server = Server(broker, **fast(concurrency=1, error_handler=on_error))
    async with serving(server, handler):
        bad = await enqueue(broker, "job", raw_payload=b"{not json", max_retry=5)
        good = await enqueue(broker, "job", {"ok": True}, retention_s=60)
        dead = await wait_for_state(broker, bad, TaskState.ARCHIVED)
        await wait_for_state(broker, good, TaskState.COMPLETED)
    assert dead.last_error is not None and dead.last_error.startswith("PayloadError")
    assert ran == [{"ok": True}]
    assert reported == [(b"{not json", "PayloadError")]  # the raw bytes, since they are unreadable
    assert server.stats.archived == 1


async def test_oversized_payload_is_archived_unread(broker: Broker) -> None:
    ran: list[object] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        ran.append(task.payload)
        return None

    async with serving(Server(broker, **fast(max_payload_bytes=64)), handler):
        big = await enqueue(broker, "job", "x" * 200, max_retry=5)
        small = await enqueue(broker, "job", "x", retention_s=60)
        dead = await wait_for_state(broker, big, TaskState.ARCHIVED)
        await wait_for_state(broker, small, TaskState.COMPLETED)
    assert dead.last_error is not None
    assert dead.last_error.startswith("PayloadTooLargeError")
    assert "64-byte limit" in dead.last_error
    assert ran == ["x"]


async def test_non_json_result_fails_the_attempt(broker: Broker) -> None:
    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return {1, 2}  # a set is not JSON

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, "job", retention_s=60, max_retry=0)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert info.last_error is not None and info.last_error.startswith("PayloadError")
    assert "result is a set" in info.last_error  # the result, not the payload, is at fault
