"""Schedules on Redis: key layout, and on a real Redis Cluster the fire step (cursor and enqueue
in one script, in the slot of the entry's queue) with schedulers racing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis_servers import Fleet, namespaced_broker, start_cluster

from conveyor import App
from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.keys import queue_keys
from conveyor.brokers.redis.schedule_keys import schedule_due, schedule_record
from conveyor.brokers.schedules import ScheduleRecord
from conveyor.inspector import AsyncInspector
from conveyor.message import TaskState
from conveyor.options import parse_options
from conveyor.scheduling.scheduler import Scheduler
from conveyor.scheduling.targets import canvas_entry
from conveyor.workflows import chain, signature

pytestmark = pytest.mark.redis

QUEUES = [f"q{i}" for i in range(6)]


def _workflow_record() -> ScheduleRecord:
    entry = canvas_entry(
        chain(signature("job.fetch"), signature("job.store")),
        defaults=lambda _: parse_options({}),
        name="flow",
        cron=None,
        every=1,
        tz="UTC",
        missed="once",
        options=parse_options({}),
        max_payload_bytes=1 << 20,
    )
    return entry.record(owner=None, next_fire_at=0.0)


def fire_second(task_id: str) -> float:
    stamp = task_id.split(":", 1)[1]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def test_an_entry_lives_in_the_slot_of_its_queue() -> None:
    block = queue_keys("ns", "emails").pending
    for key in (schedule_record("ns", "emails", "nightly"), schedule_due("ns", "emails")):
        assert key.split("{")[1].split("}")[0] == block.split("{")[1].split("}")[0] == "emails"


async def test_moving_an_entry_to_another_queue_keeps_one_entry(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        inspector = AsyncInspector(broker)
        await inspector.add_schedule("e", "t.x", every=60, queue="a")
        await inspector.pause_schedule("e")

        moved = await inspector.add_schedule("e", "t.x", every=60, queue="b")

        assert (moved.queue, moved.paused) == ("b", True)
        assert [(s.name, s.queue) for s in await inspector.list_schedules()] == [("e", "b")]


async def _race(schedulers: list[Scheduler], broker: RedisBroker, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        await asyncio.gather(*(s.run_once(broker) for s in schedulers))
        await asyncio.sleep(0.05)


async def test_cluster_schedulers_fire_each_fire_time_once_in_every_slot(tmp_path: Path) -> None:
    with Fleet() as fleet:
        addresses = await asyncio.to_thread(start_cluster, fleet, tmp_path)
        url = f"redis+cluster://{addresses[0]}?namespace=sched"
        brokers = [RedisBroker.from_url(url) for _ in range(3)]
        try:
            inspector = AsyncInspector(brokers[0])
            for q in QUEUES:
                await inspector.add_schedule(f"tick-{q}", "job.tick", every=1, queue=q)
            schedulers = [Scheduler(b) for b in brokers]

            # Three schedulers on three connections, each round at once: the fire script runs
            # in one slot per queue, so Cluster accepts it, and one of each race wins.
            await asyncio.gather(
                *(_race([s], b, 3.5) for s, b in zip(schedulers, brokers, strict=True))
            )

            assert sorted(await brokers[0].list_queues()) == QUEUES
            total = 0
            for q in QUEUES:
                tasks = await brokers[0].list_tasks(q, TaskState.PENDING, limit=100)
                times = sorted(fire_second(t.id) for t in tasks)
                assert len(times) >= 2
                assert times == [times[0] + i for i in range(len(times))], q
                total += len(times)
            assert sum(s.fired for s in schedulers) == total
            listed = await inspector.list_schedules()
            assert [s.name for s in listed] == [f"tick-{q}" for q in QUEUES]
            assert all(s.last_task_id is not None for s in listed)
            await inspector.remove_schedule("tick-q0")
            assert len(await inspector.list_schedules()) == len(QUEUES) - 1
            # An entry that fires a workflow is stored on Cluster too (its fires are tested in
            # test_redis_schedule_workflows.py).
            stored = await brokers[0].put_schedule(_workflow_record())
            assert (await brokers[0].get_schedule("flow")).revision == stored.revision
            await brokers[0].remove_schedule("flow")
            app = App(brokers[0])

            @app.task(name="job.ping")
            def ping() -> None: ...

            app.schedule(ping, every=60)
            app.schedule(chain(ping.si(), ping.si()), every=60, name="flow")
            scheduler = app.scheduler(brokers[0])
            serving = asyncio.create_task(scheduler.serve())
            assert await asyncio.to_thread(scheduler.wait_started, 10)
            scheduler.request_stop()
            await serving
            names = [s.name for s in await inspector.list_schedules()]
            assert "job.ping" in names and "flow" in names
        finally:
            for b in brokers:
                await b.close()
