"""Rate buckets refill by the broker clock (injected here; Redis uses its server TIME)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.brokers.limits import FlowControl, Rate
from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.protocol import Broker
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.message import TaskMessage, TaskState


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
async def clocked(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Broker, Clock]]:
    clock = Clock()
    broker: Broker
    if request.param == "memory":
        broker = MemoryBroker(clock=clock)
    else:
        broker = SqliteBroker(tmp_path / "clock.db", clock=clock)
    yield broker, clock
    await broker.close()


async def test_tokens_come_back_one_period_after_they_were_taken(
    clocked: tuple[Broker, Clock],
) -> None:
    broker, clock = clocked
    assert isinstance(broker, FlowControl)
    await broker.set_rate_limit("api", Rate(2, 60.0))
    await broker.enqueue([TaskMessage(id=f"t{i}", type="api") for i in range(5)])

    assert len(await broker.claim(["default"], limit=10, lease_s=30)) == 2
    held = await broker.get_task("default", "t2")
    assert held.state is TaskState.SCHEDULED and held.next_process_at is not None
    assert held.next_process_at.timestamp() == pytest.approx(clock.now + 60.0)

    clock.now += 59.9  # not yet back
    assert await broker.claim(["default"], limit=10, lease_s=3600) == []
    clock.now += 0.1  # the two tokens are back
    assert [le.task.id for le in await broker.claim(["default"], limit=10, lease_s=3600)] == [
        "t2",
        "t3",
    ]
    clock.now += 60.0
    assert [le.task.id for le in await broker.claim(["default"], limit=10, lease_s=3600)] == ["t4"]
