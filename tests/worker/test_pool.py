"""HandlerThreadPool: outcomes back on the loop, contextvars, cancel, abandon, shutdown."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from conveyor.worker.pool import HandlerThreadPool
from support import wait_until

_label: contextvars.ContextVar[str] = contextvars.ContextVar("label", default="none")


def _thread_name() -> str:
    return threading.current_thread().name


async def test_outcomes_come_back_to_each_awaiter_from_at_most_size_threads() -> None:
    pool = HandlerThreadPool(4, name="hop")
    names: set[str] = set()

    def work(n: int) -> int:
        names.add(_thread_name())
        if n % 7 == 0:
            raise ValueError(n)
        return n * 2

    async def slot(first: int) -> list[int]:
        seen: list[int] = []
        for n in range(first, first + 50):
            try:
                seen.append(await pool.run(work, n))
            except ValueError as exc:
                seen.append(-exc.args[0])
        return seen

    try:
        results = await asyncio.gather(*(slot(first) for first in range(0, 400, 50)))
    finally:
        pool.shutdown()
    assert [value for seen in results for value in seen] == [
        -n if n % 7 == 0 else n * 2 for n in range(400)
    ]
    assert names <= {f"hop-{i}" for i in range(1, 5)}


async def test_a_stop_iteration_comes_back_as_a_runtime_error_not_a_hang() -> None:
    pool = HandlerThreadPool(1)
    try:
        with pytest.raises(RuntimeError, match="StopIteration") as caught:
            await asyncio.wait_for(pool.run(next, iter([])), 5)
        assert await pool.run(int, "7") == 7  # later outcomes still come back
    finally:
        pool.shutdown()
    assert isinstance(caught.value.__cause__, StopIteration)


async def test_each_call_runs_in_the_context_it_was_given() -> None:
    pool = HandlerThreadPool(2)

    async def labelled(label: str) -> str:
        _label.set(label)
        return await pool.run(contextvars.copy_context().run, _label.get)

    try:
        got = await asyncio.gather(*(asyncio.create_task(labelled(f"t{i}")) for i in range(6)))
    finally:
        pool.shutdown()
    assert got == [f"t{i}" for i in range(6)]
    assert _label.get() == "none"


async def test_a_call_withdrawn_before_a_thread_took_it_never_runs() -> None:
    pool = HandlerThreadPool(1)
    release = threading.Event()
    ran: list[str] = []

    def blocking() -> None:
        release.wait(10)

    try:
        first = pool.run(blocking)
        queued = pool.run(ran.append, "withdrawn")
        assert queued.cancel()
        assert not queued.cancel()  # withdrawn once
        release.set()
        await first
        await pool.run(ran.append, "after")
    finally:
        release.set()
        pool.shutdown()
    assert ran == ["after"]
    assert not queued.done()


async def test_a_cancelled_awaiter_ignores_the_outcome_and_can_wait_for_the_call_to_end() -> None:
    pool = HandlerThreadPool(1)
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        raise RuntimeError("outcome nobody reads")

    run = pool.run(slow)

    async def awaiter() -> str:
        return await run

    task = asyncio.create_task(awaiter())
    try:
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not run.cancel()  # already running: cannot be withdrawn
        assert not run.done()
        ended = run.ended()
        release.set()
        await asyncio.wait_for(ended, 5)
        assert run.done()
        assert await pool.run(_thread_name) == "conveyor-handler-1"  # the thread came back
    finally:
        release.set()
        pool.shutdown()


def _live(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


async def test_an_abandoned_thread_is_replaced_and_the_pool_keeps_size_threads() -> None:
    pool = HandlerThreadPool(1, name="slot")
    started = threading.Event()
    release = threading.Event()

    def stuck_call() -> None:
        started.set()
        release.wait(10)

    try:
        pool.run(stuck_call)
        await asyncio.to_thread(started.wait, 5)
        pool.abandon()
        assert pool.abandoned == 1
        # One slot, still stuck: only a replacement thread can run this.
        assert await asyncio.wait_for(pool.run(_thread_name), 5) == "slot-2"
        # Whichever of the two finishes first exits, so one thread serves the slot after.
        release.set()
        await asyncio.to_thread(wait_until, lambda: len(_live("slot-")) == 1)
        assert pool.abandoned == 0
        assert await pool.run(_thread_name) == _live("slot-")[0].name
    finally:
        release.set()
        pool.shutdown()


async def test_shutdown_lets_idle_threads_exit_and_refuses_new_calls() -> None:
    pool = HandlerThreadPool(3, name="closing")
    threads = await asyncio.gather(*(pool.run(threading.current_thread) for _ in range(3)))
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.run(_thread_name)
    await asyncio.to_thread(wait_until, lambda: not any(t.is_alive() for t in threads))


def test_an_outcome_after_its_loop_closed_is_dropped_and_the_thread_serves_on() -> None:
    pool = HandlerThreadPool(1)
    started = threading.Event()
    release = threading.Event()

    def slow() -> int:
        started.set()
        release.wait(10)
        return 1

    async def start() -> None:
        pool.run(slow)
        await asyncio.to_thread(started.wait, 5)

    async def again() -> str:
        return await asyncio.wait_for(pool.run(_thread_name), 5)

    try:
        asyncio.run(start())  # its loop closes with the call still running
        release.set()
        assert asyncio.run(again()) == "conveyor-handler-1"
    finally:
        release.set()
        pool.shutdown()
