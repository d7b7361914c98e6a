"""The database thread, and blocking callers that run their calls inline instead."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conveyor.brokers.sqlite.worker_thread import DatabaseThread
from conveyor.private_loop import PrivateLoop, caller_may_block


async def test_async_callers_run_on_the_thread() -> None:
    thread = DatabaseThread("test-db-thread")
    name = await thread.run(lambda: threading.current_thread().name)
    assert name == "test-db-thread"
    thread.stop()


def test_a_blocking_caller_runs_inline_and_never_starts_the_thread() -> None:
    thread = DatabaseThread("test-db-thread")
    loop = PrivateLoop("test-loop")
    try:
        ident = loop.run(thread.run(threading.get_ident))
    finally:
        loop.close()
    assert ident == threading.get_ident()
    assert thread._thread is None
    thread.stop()


def test_caller_may_block_is_set_only_inside_a_private_loop() -> None:
    async def flag() -> bool:
        return caller_may_block.get()

    loop = PrivateLoop("test-loop")
    try:
        assert loop.run(flag()) is True
    finally:
        loop.close()
    assert caller_may_block.get() is False
    assert asyncio.run(flag()) is False


def test_inline_calls_and_thread_jobs_never_overlap() -> None:
    thread = DatabaseThread("test-db-thread")
    inside = 0
    overlaps = 0
    guard = threading.Lock()

    def job() -> None:
        nonlocal inside, overlaps
        with guard:
            inside += 1
            overlaps += inside > 1
        for _ in range(20):  # let go of the GIL: the other callers get a chance to get in
            time.sleep(0)
        with guard:
            inside -= 1

    async def through_the_thread() -> None:
        await asyncio.gather(*(thread.run(job) for _ in range(200)))

    def inline() -> None:
        loop = PrivateLoop("test-loop")
        try:
            for _ in range(200):
                loop.run(thread.run(job))
        finally:
            loop.close()

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(inline), pool.submit(inline)]
        asyncio.run(through_the_thread())
        for future in futures:
            future.result()
    assert overlaps == 0
    thread.stop()


def test_a_stopped_thread_refuses_inline_calls_too() -> None:
    thread = DatabaseThread("test-db-thread")
    thread.stop()
    loop = PrivateLoop("test-loop")
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            loop.run(thread.run(lambda: None))
    finally:
        loop.close()


async def test_acquire_idle_takes_the_lock_only_when_nothing_runs_or_waits() -> None:
    thread = DatabaseThread("test-db-thread")
    assert thread.acquire_idle()
    assert thread.lock.locked()
    thread.lock.release()
    started, release = threading.Event(), threading.Event()
    job = asyncio.ensure_future(thread.run(lambda: (started.set(), release.wait())))
    await asyncio.sleep(0)  # the job is queued
    assert await asyncio.to_thread(started.wait, 5.0)
    assert not thread.acquire_idle()  # a job runs
    release.set()
    await job
    assert thread.acquire_idle()
    thread.lock.release()
    thread.stop()
    assert not thread.acquire_idle()
    assert not thread.lock.locked()
