"""DeadlineSweep: one loop timer for many time limits."""

from __future__ import annotations

import asyncio

from conveyor.worker.deadlines import DeadlineSweep
from support import eventually


async def test_items_expire_in_order_of_their_limits_not_of_watching() -> None:
    expired: list[str] = []
    sweep: DeadlineSweep[str] = DeadlineSweep(expired.append)

    sweep.watch("late", 0.15)
    sweep.watch("early", 0.05)  # earlier than the armed timer: re-arms it

    await eventually(lambda: _ready(len(expired) == 2), within=5)
    assert expired == ["early", "late"]
    assert sweep.watched == 0


async def test_forgotten_items_never_expire() -> None:
    expired: list[str] = []
    sweep: DeadlineSweep[str] = DeadlineSweep(expired.append)

    gone = sweep.watch("forgotten", 0.02)
    sweep.watch("kept", 0.05)
    sweep.forget(gone)
    sweep.forget(gone)  # twice is harmless

    await eventually(lambda: _ready(expired == ["kept"]), within=5)
    await asyncio.sleep(0.05)  # past both limits: nothing more may come
    assert expired == ["kept"]


async def test_the_heap_stays_bounded_by_the_live_items() -> None:
    sweep: DeadlineSweep[int] = DeadlineSweep(lambda item: None)
    live = [sweep.watch(i, 3600) for i in range(10)]

    for i in range(10_000):
        sweep.forget(sweep.watch(i, 3600))  # short tasks under a long limit

    assert sweep.watched == 10
    assert len(sweep._heap) <= 2 * 10 + 64
    for entry in live:
        sweep.forget(entry)
    assert sweep.watched == 0


async def test_close_stops_the_timer() -> None:
    expired: list[str] = []
    sweep: DeadlineSweep[str] = DeadlineSweep(expired.append)
    sweep.watch("never", 0.01)

    sweep.close()

    await asyncio.sleep(0.05)
    assert expired == []


async def _ready(value: bool) -> bool:
    return value
