"""Schedule entries that fire workflows, on every broker: one workflow per fire time."""

from __future__ import annotations

import asyncio

from conformance.factories import QUEUE
from conveyor.brokers.protocol import Broker
from conveyor.brokers.schedules import ScheduleFire, ScheduleRecord, ScheduleStore
from conveyor.brokers.workflows import WorkflowBroker, step_task_id
from conveyor.message import TaskState
from conveyor.options import parse_options
from conveyor.scheduling.entry import ScheduleTarget, schedule_workflow_id, spec_of
from conveyor.scheduling.plan import plan_fire
from conveyor.scheduling.targets import canvas_entry
from conveyor.workflows import chain, signature


def stores(broker: Broker) -> tuple[ScheduleStore, WorkflowBroker]:
    assert isinstance(broker, ScheduleStore) and isinstance(broker, WorkflowBroker)
    return broker, broker


def workflow_record(now: float) -> ScheduleRecord:
    entry = canvas_entry(
        chain(signature("report.fetch", {"day": 1}), signature("report.send")),
        defaults=lambda _: parse_options({"queue": QUEUE}, defaults_only=True),
        name="ingest",
        cron=None,
        every=60,
        tz="UTC",
        missed="once",
        options=parse_options({"max_retry": 2}, defaults_only=True),
        max_payload_bytes=1 << 20,
    )
    assert entry.target is ScheduleTarget.CHAIN
    # Due, on a fire time: one fire time up to now, whatever the clock reads.
    return entry.record(owner="app", next_fire_at=now // 60 * 60)


async def planned(store: ScheduleStore) -> tuple[ScheduleRecord, ScheduleFire]:
    now = await store.schedule_clock()
    stored = await store.put_schedule(workflow_record(now))
    fire, times = plan_fire(stored, spec_of(stored), now)
    assert times == [stored.next_fire_at]
    return stored, fire


async def test_a_workflow_entry_fired_twice_at_one_fire_time_creates_one_workflow(
    broker: Broker,
) -> None:
    store, workflows = stores(broker)
    stored, fire = await planned(store)
    workflow_id = schedule_workflow_id("ingest", stored.next_fire_at)

    [first] = await store.fire_schedules([fire])
    [again] = await store.fire_schedules([fire])

    assert first.applied and first.stored == (workflow_id,)
    assert not again.applied and again.stored == ()
    assert [w.id for w in await workflows.list_workflows(None)] == [workflow_id]
    pending = await broker.list_tasks(QUEUE, TaskState.PENDING)
    assert [(t.id, t.type, t.max_retry) for t in pending] == [
        (step_task_id(workflow_id, 0), "report.fetch", 2)
    ]
    after = await store.get_schedule("ingest")
    assert (after.last_task_id, after.last_fire_at) == (workflow_id, stored.next_fire_at)
    assert after.next_fire_at > stored.next_fire_at


async def test_concurrent_fires_of_a_workflow_entry_create_one_workflow(broker: Broker) -> None:
    store, workflows = stores(broker)
    _, fire = await planned(store)

    results = await asyncio.gather(*(store.fire_schedules([fire]) for _ in range(6)))

    assert sum(o.applied for [o] in results) == 1
    assert len(await workflows.list_workflows(None)) == 1
    assert len(await broker.list_tasks(QUEUE, TaskState.PENDING)) == 1


async def test_a_fire_whose_workflow_exists_moves_the_cursor_and_creates_nothing(
    broker: Broker,
) -> None:
    # What a scheduler that died after creating the workflow, before moving the cursor, leaves.
    store, workflows = stores(broker)
    _, fire = await planned(store)
    await workflows.create_workflow(fire.workflows[0])

    [outcome] = await store.fire_schedules([fire])

    assert outcome.applied and outcome.stored == ()
    assert len(await workflows.list_workflows(None)) == 1
    assert len(await broker.list_tasks(QUEUE, TaskState.PENDING)) == 1
    assert (await store.get_schedule("ingest")).next_fire_at == fire.next_fire_at
