"""purge_expired drops per-minute totals older than the minutes kept (brokers whose clock moves).

Observed through the public API: a minute counted, the clock moved on and purged, then moved
back, where the minute reads 0 once it was dropped. (Redis keeps server time; tests/redis checks
its stats hash directly.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.protocol import Broker
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.brokers.throughput import MINUTE_TOTALS_KEPT
from conveyor.message import TaskMessage

START = 1_800_000_000.0  # a whole minute


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(("minutes_later", "kept"), [(MINUTE_TOTALS_KEPT - 1, True), (200, False)])
async def test_old_minute_totals_are_purged(
    kind: str, minutes_later: int, kept: bool, tmp_path: Path
) -> None:
    clock = Clock()
    broker: MemoryBroker | SqliteBroker = (
        MemoryBroker(clock=clock)
        if kind == "memory"
        else SqliteBroker(tmp_path / "b.db", clock=clock)
    )
    checked: Broker = broker
    try:
        await checked.enqueue([TaskMessage(id="a", type="t")])
        [lease] = await checked.claim(["default"], limit=1, lease_s=30)
        await checked.retry(lease, error="boom", delay_s=1)
        [minute] = await broker.throughput("default", minutes=1)
        assert (minute.minute.timestamp(), minute.processed, minute.failed) == (START, 1, 1)

        clock.now = START + minutes_later * 60
        await checked.purge_expired()
        clock.now = START
        [minute] = await broker.throughput("default", minutes=1)
        assert (minute.processed, minute.failed) == ((1, 1) if kept else (0, 0))
    finally:
        await checked.close()
