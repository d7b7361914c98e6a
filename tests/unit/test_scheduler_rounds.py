"""The scheduler's rounds on an injectable clock: fire times, late and missed fires, restarts,
racing schedulers, pauses, and the code-defined entries written and removed at start."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from conveyor import App
from conveyor.brokers.memory import MemoryBroker
from conveyor.errors import BrokerUnavailableError
from conveyor.inspector import AsyncInspector
from conveyor.message import TaskState
from conveyor.scheduling.plan import LATE_GRACE_S
from conveyor.scheduling.scheduler import Scheduler
from support import eventually

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = START + 0.25

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker(clock: Clock) -> MemoryBroker:
    return MemoryBroker(clock=clock)


def make_app(broker: MemoryBroker, *, every: float = 60, missed: str = "once") -> App:
    app = App(broker)

    @app.periodic(every=every, missed=missed, name="job.tick")
    def tick() -> None: ...

    return app


def scheduler_of(app: App, broker: MemoryBroker) -> Scheduler:
    return Scheduler(broker, entries=list(app.schedules.values()), owner=app.schedule_owner)


async def started(app: App, broker: MemoryBroker) -> Scheduler:
    scheduler = scheduler_of(app, broker)
    await scheduler._sync(broker)
    return scheduler


async def task_ids(broker: MemoryBroker) -> list[str]:
    return [t.id for t in await broker.list_tasks("default", TaskState.PENDING, limit=1000)]


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")


async def test_each_fire_time_gets_one_task_with_a_telling_id(
    broker: MemoryBroker, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(broker)
    scheduler = await started(app, broker)
    caplog.set_level(logging.INFO, logger="conveyor.scheduling")

    pause = await scheduler.run_once(broker)
    assert await task_ids(broker) == []
    assert pause == pytest.approx(1.0)  # capped: the next fire is a minute away
    clock.now = START + 60.01
    await scheduler.run_once(broker)
    await scheduler.run_once(broker)  # nothing new until the next fire time
    clock.now = START + 120.5
    await scheduler.run_once(broker)

    assert await task_ids(broker) == [
        f"job.tick:{stamp(START + 60)}",
        f"job.tick:{stamp(START + 120)}",
    ]
    fired = [r.getMessage() for r in caplog.records if "fired for" in r.getMessage()]
    assert fired[0] == (
        f"schedule job.tick fired for 2026-06-01T12:01:00+00:00: task job.tick:{stamp(START + 60)}"
    )


async def test_late_fires_within_the_grace_each_get_their_task(
    broker: MemoryBroker, clock: Clock
) -> None:
    scheduler = await started(make_app(broker, every=1), broker)

    clock.now = START + LATE_GRACE_S - 1
    await scheduler.run_once(broker)

    assert len(await task_ids(broker)) == int(LATE_GRACE_S) - 1


@pytest.mark.parametrize(("missed", "count"), [("once", 1), ("skip", 0), ("all", 60)])
async def test_missed_fires_follow_the_policy(
    broker: MemoryBroker, clock: Clock, missed: str, count: int
) -> None:
    scheduler = await started(make_app(broker, missed=missed), broker)

    clock.now = START + 3600 + 30  # an hour with no scheduler: 60 fire times missed
    await scheduler.run_once(broker)

    ids = await task_ids(broker)
    assert len(ids) == count
    if missed == "once":
        assert ids == [f"job.tick:{stamp(START + 3600)}"]  # the latest missed fire time
    [info] = await AsyncInspector(broker).list_schedules()
    assert info.next_fire_at == datetime.fromtimestamp(START + 3660, UTC)


async def test_missed_all_is_capped_at_the_latest_hundred(
    broker: MemoryBroker, clock: Clock
) -> None:
    scheduler = await started(make_app(broker, every=1, missed="all"), broker)

    clock.now = START + 1000
    await scheduler.run_once(broker)

    ids = await task_ids(broker)
    late = int(LATE_GRACE_S)  # the last seconds are late, not missed: each gets its task
    assert len(ids) == 100 + late
    assert ids[0] == f"job.tick:{stamp(START + 1000 - late - 99)}"


async def test_restarting_never_fires_a_fire_time_twice(broker: MemoryBroker, clock: Clock) -> None:
    app = make_app(broker)
    first = await started(app, broker)
    clock.now = START + 60.5
    await first.run_once(broker)

    again = await started(app, broker)  # same code: the stored cursor is kept
    await again.run_once(broker)
    clock.now = START + 61
    await again.run_once(broker)

    assert await task_ids(broker) == [f"job.tick:{stamp(START + 60)}"]


async def test_racing_schedulers_enqueue_each_fire_time_once(
    broker: MemoryBroker, clock: Clock
) -> None:
    app = make_app(broker, every=1)
    schedulers = [await started(app, broker) for _ in range(3)]

    for step in range(1, 20):
        clock.now = START + step + 0.1
        for scheduler in schedulers[step % 3 :] + schedulers[: step % 3]:
            await scheduler.run_once(broker)

    ids = await task_ids(broker)
    assert ids == [f"job.tick:{stamp(START + s)}" for s in range(1, 20)]
    assert sum(s.fired for s in schedulers) == 19


async def test_a_paused_entry_skips_its_fire_times(broker: MemoryBroker, clock: Clock) -> None:
    inspector = AsyncInspector(broker)
    scheduler = await started(make_app(broker), broker)
    await inspector.pause_schedule("job.tick")
    [paused] = await inspector.list_schedules()

    clock.now = START + 600.5
    await scheduler.run_once(broker)
    await inspector.unpause_schedule("job.tick")
    await scheduler.run_once(broker)
    clock.now = START + 660.5
    await scheduler.run_once(broker)

    assert (paused.paused, paused.next_fire_at) == (True, None)
    assert await task_ids(broker) == [f"job.tick:{stamp(START + 660)}"]


async def test_start_removes_only_its_own_stale_code_entries(
    broker: MemoryBroker, clock: Clock
) -> None:
    inspector = AsyncInspector(broker)
    old = App(broker)

    @old.periodic(every=60, name="job.gone")
    def gone() -> None: ...

    other = App(broker, schedule_owner="billing")

    @other.periodic(cron="@daily", name="billing.close")
    def close() -> None: ...

    await started(old, broker)
    await started(other, broker)
    await inspector.add_schedule("adhoc", "raw.type", {"x": 1}, every=30)

    await started(make_app(broker), broker)  # the new code: job.tick, no job.gone

    listed = {s.name: s for s in await inspector.list_schedules()}
    assert sorted(listed) == ["adhoc", "billing.close", "job.tick"]
    assert (listed["adhoc"].owner, listed["adhoc"].code_defined) == (None, False)
    assert listed["billing.close"].owner == "billing"
    assert listed["job.tick"].next_fire_at == datetime.fromtimestamp(START + 60, UTC)


async def test_inspector_added_entries_fire_with_their_options(
    broker: MemoryBroker, clock: Clock
) -> None:
    scheduler = Scheduler(broker)  # no app: it fires what the broker holds
    await AsyncInspector(broker).add_schedule(
        "raw", "raw.type", {"x": 1}, every=10, queue="other", max_retry=2
    )

    clock.now = START + 10.1
    await scheduler.run_once(broker)

    [task] = await broker.list_tasks("other", TaskState.PENDING)
    assert (task.type, task.payload, task.max_retry) == ("raw.type", {"x": 1}, 2)


async def test_an_unusable_entry_is_reported_once_and_holds_up_no_other(
    broker: MemoryBroker, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = await started(make_app(broker), broker)
    [good] = await broker.list_schedules()
    # Written past the checks (by hand, or an older version): well formed, but no next date.
    await broker.put_schedule(replace(good, name="broken", cron="0 0 31 2 *", every_us=None))
    caplog.set_level(logging.ERROR, logger="conveyor.scheduling")

    for step in (60.5, 120.5):
        clock.now = START + step
        await scheduler.run_once(broker)

    assert await task_ids(broker) == [
        f"job.tick:{stamp(START + 60)}",
        f"job.tick:{stamp(START + 120)}",
    ]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and errors[0].startswith("schedule broken cannot fire:")


async def test_the_loop_rides_out_a_broker_outage(caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(MemoryBroker):
        """A real broker whose due_schedules fails while ``down`` (a dropped connection)."""

        down = 3

        async def due_schedules(self, *, limit: int):  # type: ignore[no-untyped-def]
            if self.down:
                self.down -= 1
                raise BrokerUnavailableError("connection reset (injected)")
            return await super().due_schedules(limit=limit)

    broker = Flaky()
    await AsyncInspector(broker).add_schedule("tick", "job.tick", every=1)
    scheduler = Scheduler(broker)
    caplog.set_level(logging.WARNING, logger="conveyor.scheduling")

    serving = asyncio.create_task(scheduler.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, scheduler.fired >= 2), within=10)
    finally:
        scheduler.request_stop()
        await serving

    assert broker.down == 0
    outages = [r for r in caplog.records if "broker unavailable" in r.getMessage()]
    assert len(outages) == 3
