"""``Deadlines``: the one-timer bound on the Redis broker's direct calls (``direct.py``).

Bounds are long enough that a call finishing at once is never late, even on a loaded machine.
"""

from __future__ import annotations

import asyncio

import pytest

from conveyor.brokers.redis.direct import Deadlines


async def bounded(deadlines: Deadlines, work: asyncio.Future[None]) -> None:
    """What AsyncLines.call does around a command."""
    task = deadlines.enter()
    try:
        await work
    except BaseException as exc:
        deadlines.leave(task, exc)
        raise
    deadlines.leave(task, None)


async def test_a_call_past_its_bound_raises_timeout_error() -> None:
    deadlines = Deadlines(0.01)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await bounded(deadlines, never)


async def test_calls_in_time_pass_and_a_later_slow_one_still_times_out() -> None:
    deadlines = Deadlines(1.0)
    loop = asyncio.get_running_loop()
    for _ in range(3):
        done: asyncio.Future[None] = loop.create_future()
        done.set_result(None)
        await bounded(deadlines, done)
    never: asyncio.Future[None] = loop.create_future()
    with pytest.raises(TimeoutError):
        await bounded(deadlines, never)


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(60.0)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    call = asyncio.create_task(bounded(deadlines, never))
    await asyncio.sleep(0)  # inside the bound
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_concurrent_calls_each_get_their_own_outcome() -> None:
    deadlines = Deadlines(1.0)
    loop = asyncio.get_running_loop()
    quick: asyncio.Future[None] = loop.create_future()
    never: asyncio.Future[None] = loop.create_future()
    slow_call = asyncio.create_task(bounded(deadlines, never))
    quick_call = asyncio.create_task(bounded(deadlines, quick))
    await asyncio.sleep(0)
    quick.set_result(None)
    await quick_call
    with pytest.raises(TimeoutError):
        await slow_call
    assert quick_call.cancelling() == 0 and slow_call.cancelling() == 0


def test_calls_on_an_event_loop_after_another_one_closed_are_still_bounded() -> None:
    """A broker driven by one loop, then by another: the first loop closed with its timer
    still armed (its calls were quick), which must not leave the second loop's calls unbounded."""
    deadlines = Deadlines(0.2)

    async def quick_call() -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        await bounded(deadlines, done)

    async def slow_call() -> None:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await bounded(deadlines, never)

    asyncio.run(quick_call())
    asyncio.run(slow_call())
