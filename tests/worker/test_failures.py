"""Failed attempts: retries, archiving, SkipRetry, Retry(delay), unknown types, time limits."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

from conveyor.brokers.protocol import Broker
from conveyor.errors import Retry, SkipRetry
from conveyor.message import JSONValue, Task, TaskState
from conveyor.mux import ServeMux
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from worker.harness import BlockingHandler, enqueue, fast, serving, wait_for_state


async def test_failing_task_is_retried_then_archived_with_its_last_error(broker: Broker) -> None:
    attempts: list[int] = []
    reported: list[tuple[str, str]] = []

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        attempts.append(ctx.retry_count)
        raise ValueError(f"boom {ctx.retry_count}")

    def on_error(ctx: TaskContext, task: Task, exc: BaseException) -> None:
        reported.append((ctx.task_id, str(exc)))

    server = Server(broker, **fast(error_handler=on_error))
    async with serving(server, handler):
        message = await enqueue(broker, max_retry=2)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert attempts == [0, 1, 2]
    assert info.retried == 3
    assert info.last_error == "ValueError: boom 2"
    assert reported == [(message.id, f"boom {n}") for n in range(3)]
    stats = server.stats
    assert (stats.failed, stats.retried, stats.archived) == (3, 2, 1)


async def test_retry_delay_decides_when_the_next_attempt_is_due(broker: Broker) -> None:
    seen: list[tuple[int, str]] = []

    def one_hour(retried: int, error: BaseException, task: Task) -> timedelta:
        seen.append((retried, type(error).__name__))
        return timedelta(hours=1)

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        raise KeyError("missing")

    async with serving(Server(broker, **fast(retry_delay=one_hour)), handler):
        message = await enqueue(broker, max_retry=3)
        info = await wait_for_state(broker, message, TaskState.RETRY)
    assert seen == [(0, "KeyError")]
    assert info.next_process_at is not None
    assert info.next_process_at > datetime.now(UTC) + timedelta(minutes=50)


async def test_async_error_handler_is_awaited(broker: Broker) -> None:
    reported = asyncio.Event()
    seen: list[BaseException] = []

    async def on_error(ctx: TaskContext, task: Task, exc: BaseException) -> None:
        seen.append(exc)
        reported.set()

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        raise RuntimeError("bad")

    async with serving(Server(broker, **fast(error_handler=on_error)), handler):
        message = await enqueue(broker, max_retry=0)
        await asyncio.wait_for(reported.wait(), 5)
        await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert isinstance(seen[0], RuntimeError)


async def test_error_handler_that_raises_does_not_stop_the_worker(broker: Broker) -> None:
    def on_error(ctx: TaskContext, task: Task, exc: BaseException) -> None:
        raise ZeroDivisionError("handler bug")

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        if task.payload == "fail":
            raise ValueError("first")
        return "ok"

    async with serving(Server(broker, **fast(error_handler=on_error)), handler):
        failing = await enqueue(broker, "job", "fail", max_retry=0)
        fine = await enqueue(broker, "job", "fine", retention_s=60)
        dead = await wait_for_state(broker, failing, TaskState.ARCHIVED)
        await wait_for_state(broker, fine, TaskState.COMPLETED)
    assert dead.last_error == "ValueError: first"


async def test_skip_retry_archives_at_once(broker: Broker) -> None:
    calls = 0

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        nonlocal calls
        calls += 1
        raise SkipRetry("invalid input")

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, max_retry=10)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert calls == 1
    assert info.retried == 1
    assert info.last_error == "SkipRetry: invalid input"


async def test_retry_with_delay_overrides_the_retry_delay(broker: Broker) -> None:
    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        raise Retry("rate limited", delay=timedelta(minutes=30))

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, max_retry=5)
        info = await wait_for_state(broker, message, TaskState.RETRY)
    assert info.last_error == "Retry: rate limited"
    assert info.next_process_at is not None
    due_in = info.next_process_at - datetime.now(UTC)
    assert timedelta(minutes=29) < due_in <= timedelta(minutes=30)


async def test_retry_without_delay_uses_the_servers_delay(broker: Broker) -> None:
    attempts = 0

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Retry()
        return "second time"

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, max_retry=5, retention_s=60)
        info = await wait_for_state(broker, message, TaskState.COMPLETED)
    assert info.result == "second time"
    assert info.retried == 1


async def test_unknown_type_is_retried_then_archived(broker: Broker) -> None:
    mux = ServeMux()
    mux.handle("known", lambda ctx, task: None)
    server = Server(broker, **fast())
    async with serving(server, mux):
        message = await enqueue(broker, "unknown:type", max_retry=1)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert info.retried == 2
    assert info.last_error is not None
    assert info.last_error.startswith("UnknownTaskError")
    assert "unknown:type" in info.last_error
    assert server.stats.retried == 1


async def test_sync_handler_raising_stop_iteration_fails_its_attempt(broker: Broker) -> None:
    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        empty: list[JSONValue] = []
        return next(iter(empty))  # raises StopIteration

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, max_retry=0)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert info.last_error == "RuntimeError: sync handler raised StopIteration"


async def test_async_handler_past_its_timeout_is_cancelled(broker: Broker) -> None:
    handler = BlockingHandler()

    server = Server(broker, **fast())
    async with serving(server, handler):
        message = await enqueue(broker, timeout_s=0.2, max_retry=0)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert handler.cancelled.is_set()
    assert info.last_error == "TimeoutError: task timed out after 0.2s"


async def test_sync_handler_past_its_timeout_is_abandoned(broker: Broker) -> None:
    finish = threading.Event()
    saw_cancel: list[bool] = []
    ran: list[str] = []

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        if task.payload == "slow":
            saw_cancel.append(ctx.cancel_event.wait(10))
            finish.wait(10)
            return "too late"
        ran.append(task.payload)
        return None

    # One slot: the next task can only run if the stuck thread was replaced.
    server = Server(broker, **fast(concurrency=1))
    try:
        async with serving(server, handler):
            slow = await enqueue(broker, "job", "slow", timeout_s=0.2, max_retry=0)
            info = await wait_for_state(broker, slow, TaskState.ARCHIVED)
            nxt = await enqueue(broker, "job", "next", retention_s=60)
            await wait_for_state(broker, nxt, TaskState.COMPLETED)
    finally:
        finish.set()
    assert info.last_error == "TimeoutError: task timed out after 0.2s"
    assert saw_cancel == [True]
    assert ran == ["next"]
    assert server.stats.abandoned_threads == 1


async def test_deadline_ends_the_attempt_and_archives_despite_retries_left(broker: Broker) -> None:
    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        await asyncio.Event().wait()
        return None

    deadline = datetime.now(UTC) + timedelta(seconds=0.3)
    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, deadline=deadline.timestamp(), timeout_s=60, max_retry=5)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert info.last_error == "TimeoutError: deadline exceeded"
    assert info.retried == 1


async def test_task_past_its_deadline_is_archived_without_running(broker: Broker) -> None:
    ran = False

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        nonlocal ran
        ran = True
        return None

    deadline = datetime.now(UTC) - timedelta(seconds=1)
    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, deadline=deadline.timestamp(), max_retry=5)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert not ran
    assert info.last_error == "TimeoutError: deadline exceeded"


async def test_handler_raising_timeout_error_itself_is_an_ordinary_failure(broker: Broker) -> None:
    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        raise TimeoutError("upstream timed out")

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, timeout_s=30, max_retry=0)
        info = await wait_for_state(broker, message, TaskState.ARCHIVED)
    assert info.last_error == "TimeoutError: upstream timed out"


async def test_timeouts_of_many_tasks_each_end_their_own_attempt(broker: Broker) -> None:
    # One sweep times every attempt: short limits end, a long one (enqueued first) runs on.
    release = asyncio.Event()

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        if task.payload == "long":
            await release.wait()
            return "done"
        await asyncio.Event().wait()
        return None

    async with serving(Server(broker, **fast(concurrency=8)), handler):
        long_task = await enqueue(broker, "job", "long", timeout_s=60, retention_s=60)
        short = [await enqueue(broker, "job", "short", timeout_s=0.1 * (i + 1)) for i in range(4)]
        ended = [await wait_for_state(broker, m, TaskState.ARCHIVED) for m in short]
        release.set()
        await wait_for_state(broker, long_task, TaskState.COMPLETED)
    assert [info.last_error for info in ended] == [
        f"TimeoutError: task timed out after {0.1 * (i + 1):g}s" for i in range(4)
    ]


async def test_a_handler_that_swallows_its_timeout_still_has_its_outcome_recorded(
    broker: Broker,
) -> None:
    # As under asyncio.timeout: the value returned stands, and recording it is not cancelled.
    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "cleaned up"
        return None

    async with serving(Server(broker, **fast()), handler):
        message = await enqueue(broker, timeout_s=0.2, retention_s=60)
        info = await wait_for_state(broker, message, TaskState.COMPLETED)
    assert info.result == "cleaned up"
