"""The worker notices when its clock and the broker's disagree, and says so (once in a while)."""

from __future__ import annotations

import logging
import time

import pytest

from conveyor.brokers.memory import MemoryBroker
from conveyor.message import Task
from conveyor.worker.context import TaskContext
from conveyor.worker.fetcher import SkewWatch
from conveyor.worker.server import Server
from support import eventually
from worker.harness import enqueue, fast, serving


def test_offset_is_measured_against_the_middle_of_the_claim() -> None:
    watch = SkewWatch(lease_s=30.0)
    # The broker read its clock at 1005.0 while the local clock went from 999.9 to 1000.1.
    assert watch.observe(expires_at=1035.0, sent=999.9, received=1000.1) == pytest.approx(5.0)


def test_small_offsets_and_slow_round_trips_are_not_reported() -> None:
    watch = SkewWatch(lease_s=30.0)
    assert watch.observe(expires_at=1030.5, sent=1000.0, received=1000.0) is None
    # 1.5 s off, but the claim took 2 s: the broker may have read its clock at any point.
    assert watch.observe(expires_at=1032.5, sent=1000.0, received=1002.0) is None


def test_warns_at_most_once_per_period() -> None:
    watch = SkewWatch(lease_s=30.0)
    assert watch.observe(expires_at=1040.0, sent=1000.0, received=1000.0) is not None
    assert watch.observe(expires_at=1040.0, sent=1000.0, received=1000.0) is None


async def test_a_worker_on_a_skewed_broker_clock_logs_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    broker = MemoryBroker(clock=lambda: time.time() + 5.0)  # the broker runs 5 s ahead
    ran: list[str] = []

    async def handler(ctx: TaskContext, task: Task) -> None:
        ran.append(ctx.task_id)

    async with serving(Server(broker, **fast()), handler):
        await enqueue(broker, "job")

        async def warned() -> bool:
            return any("clock is -5.0s off" in r.getMessage() for r in caplog.records)

        await eventually(warned)
    assert len(ran) == 1
    await broker.close()
