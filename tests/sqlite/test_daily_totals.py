"""purge_expired drops daily totals older than the days kept (brokers whose clock can move).

Observed through the public API: totals recorded on one day, the clock moved on and purged, then
moved back to that day, where ``processed_today`` is 0 once the day was dropped. (Redis keeps
server time; tests/redis checks its stats hash directly.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.protocol import DAILY_TOTALS_KEPT_DAYS, Broker
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.message import Completion, TaskMessage

DAY = 86400.0
START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(("days_later", "kept"), [(DAILY_TOTALS_KEPT_DAYS - 1, True), (91, False)])
async def test_old_daily_totals_are_purged(
    kind: str, days_later: int, kept: bool, tmp_path: Path
) -> None:
    clock = Clock()
    broker: Broker = (
        MemoryBroker(clock=clock)
        if kind == "memory"
        else SqliteBroker(tmp_path / "b.db", clock=clock)
    )
    try:
        await broker.enqueue([TaskMessage(id="a", type="t")])
        [lease] = await broker.claim(["default"], limit=1, lease_s=30)
        await broker.complete([Completion(lease=lease)])
        assert (await broker.queue_stats("default")).processed_today == 1

        clock.now = START + days_later * DAY
        await broker.purge_expired()
        clock.now = START
        assert (await broker.queue_stats("default")).processed_today == (1 if kept else 0)
    finally:
        await broker.close()
