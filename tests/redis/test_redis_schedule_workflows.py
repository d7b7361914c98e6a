"""Schedule entries that fire workflows on Redis, single server and a real 3-node Cluster.

A workflow entry's fire is two steps (``brokers/redis/schedule_workflows.py``): the fire script
records the workflow to create beside the entry, then the workflow is created in its own slot
and the record deleted. These tests stop a scheduler between the two steps, race schedulers,
and check that each fire time gets exactly one workflow.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis_servers import drop_namespace

from conformance import test_schedule_workflows as conformance
from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.schedule_keys import schedule_pending, schedule_workflow_queues
from conveyor.brokers.schedules import ScheduleFire, ScheduleRecord
from conveyor.brokers.workflows import NewWorkflow, StepOutcome, step_task_id
from conveyor.errors import BrokerUnavailableError
from conveyor.message import TaskState
from conveyor.options import parse_options
from conveyor.scheduling.entry import schedule_workflow_id, spec_of
from conveyor.scheduling.plan import plan_fire
from conveyor.scheduling.scheduler import Scheduler
from conveyor.scheduling.targets import canvas_entry
from conveyor.workflows import chain, signature
from support import eventually

pytestmark = pytest.mark.redis

QUEUE = "sw-first"  # the first step's queue, where the entry lives; the second step's is another


def workflow_record(every: float = 60) -> ScheduleRecord:
    entry = canvas_entry(
        chain(signature("job.fetch"), signature("job.store", queue="sw-second")),
        defaults=lambda _: parse_options({"queue": QUEUE}, defaults_only=True),
        name="flow",
        cron=None,
        every=every,
        tz="UTC",
        missed="once",
        options=parse_options({}, defaults_only=True),
        max_payload_bytes=1 << 20,
    )
    return entry.record(owner=None, next_fire_at=0.0)


@pytest.fixture
def cluster(redis_cluster: list[str]) -> list[str]:
    """The session's 3-node Redis Cluster (tests/conftest.py)."""
    return redis_cluster


@pytest.fixture(params=("single", "cluster"))
async def url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A namespace of its own on the test Redis, or on the 3-node Cluster."""
    namespace = f"sw{uuid.uuid4().hex[:10]}"
    if request.param == "single":
        redis_url = request.getfixturevalue("redis_url")
        yield f"{redis_url}?namespace={namespace}"
        await drop_namespace(redis_url, namespace)
    else:
        nodes = request.getfixturevalue("cluster")
        yield f"redis+cluster://{nodes[0]},{nodes[1]}?namespace={namespace}"


@pytest.fixture
async def brokers(url: str) -> AsyncIterator[list[RedisBroker]]:
    """Three brokers on the same namespace: three schedulers' connections."""
    found = [RedisBroker.from_url(url) for _ in range(3)]
    try:
        yield found
    finally:
        for broker in found:
            await broker.close()


async def planned(broker: RedisBroker) -> tuple[ScheduleRecord, ScheduleFire]:
    """The entry stored due on one fire time, and a scheduler's plan for it."""
    now = await broker.schedule_clock()
    stored = await broker.put_schedule(replace(workflow_record(), next_fire_at=now // 60 * 60))
    fire, times = plan_fire(stored, spec_of(stored), now)
    assert times == [stored.next_fire_at]
    return stored, fire


async def pending_ids(broker: RedisBroker) -> tuple[set[bytes], set[bytes]]:
    records, times = schedule_pending(broker._ns, QUEUE)
    return set(await broker._client.hkeys(records)), set(await broker._client.zrange(times, 0, -1))


async def first_steps(broker: RedisBroker) -> list[str]:
    return [t.id for t in await broker.list_tasks(QUEUE, TaskState.PENDING, limit=1000)]


async def test_a_stale_plan_records_and_creates_nothing(brokers: list[RedisBroker]) -> None:
    broker = brokers[0]
    stored, fire = await planned(broker)
    await broker.pause_schedule("flow")

    [outcome] = await broker.fire_schedules([fire])

    assert not outcome.applied
    assert await broker.list_workflows(None) == []
    assert await pending_ids(broker) == (set(), set())
    assert (await broker.get_schedule("flow")).next_fire_at == stored.next_fire_at


async def test_a_crash_between_the_fire_and_the_creation_leaves_one_workflow(
    brokers: list[RedisBroker],
) -> None:
    dead, other, late = brokers
    stored, fire = await planned(dead)
    workflow_id = schedule_workflow_id("flow", stored.next_fire_at)

    # Step 1 alone: what a scheduler SIGKILLed at the after_schedule_fire crash point leaves.
    [outcome] = await dead._fire_chunk(QUEUE, [fire])
    assert outcome.applied and outcome.stored == (workflow_id,)
    assert await dead.list_workflows(None) == []
    assert await pending_ids(dead) == ({workflow_id.encode()}, {workflow_id.encode()})
    after = await dead.get_schedule("flow")
    assert (after.last_task_id, after.next_fire_at) == (workflow_id, fire.next_fire_at)

    # Another scheduler's round leaves a record younger than the grace period to its own
    # scheduler; once older, the round creates its workflow and deletes the record.
    await other.due_schedules(limit=10)
    assert await other.list_workflows(None) == []
    other._pending_grace_s = 0.0
    await other.due_schedules(limit=10)
    assert [w.id for w in await other.list_workflows(None)] == [workflow_id]
    assert await pending_ids(other) == (set(), set())
    assert await first_steps(other) == [step_task_id(workflow_id, 0)]

    # Nothing fires that time again: a second round, the dead plan replayed, and a scheduler
    # that was only slow finishing its own step 2 all leave the one workflow.
    await other.due_schedules(limit=10)
    [again] = await late.fire_schedules([fire])
    assert not again.applied
    [made] = fire.workflows
    assert not await late._create_pending(QUEUE, made)
    assert [w.id for w in await late.list_workflows(None)] == [workflow_id]
    assert await first_steps(late) == [step_task_id(workflow_id, 0)]
    assert await pending_ids(late) == (set(), set())


async def test_schedulers_finishing_one_record_at_once_create_one_workflow(
    brokers: list[RedisBroker],
) -> None:
    stored, fire = await planned(brokers[0])
    [outcome] = await brokers[0]._fire_chunk(QUEUE, [fire])
    assert outcome.applied
    for broker in brokers:
        broker._pending_grace_s = 0.0

    await asyncio.gather(*(b.due_schedules(limit=10) for b in brokers))

    workflow_id = schedule_workflow_id("flow", stored.next_fire_at)
    assert [w.id for w in await brokers[0].list_workflows(None)] == [workflow_id]
    assert await first_steps(brokers[0]) == [step_task_id(workflow_id, 0)]
    assert await pending_ids(brokers[0]) == (set(), set())


async def test_a_damaged_record_is_dropped_and_the_others_created(
    brokers: list[RedisBroker], caplog: pytest.LogCaptureFixture
) -> None:
    broker = brokers[0]
    stored, fire = await planned(broker)
    await broker._fire_chunk(QUEUE, [fire])
    records, times = schedule_pending(broker._ns, QUEUE)
    await broker._client.hset(records, "broken", b"nan\n{}")
    await broker._client.zadd(times, {"broken": 0, "gone": 0})  # "gone": its record was deleted
    broker._pending_grace_s = 0.0

    await broker.due_schedules(limit=10)

    workflow_id = schedule_workflow_id("flow", stored.next_fire_at)
    assert [w.id for w in await broker.list_workflows(None)] == [workflow_id]
    assert await pending_ids(broker) == (set(), set())
    assert "scheduled workflow broken cannot be created" in caplog.text


async def test_racing_schedulers_fire_one_workflow_per_fire_time(
    brokers: list[RedisBroker],
) -> None:
    now = await brokers[0].schedule_clock()
    await brokers[0].put_schedule(replace(workflow_record(every=1), next_fire_at=now // 1 + 1))
    schedulers = [Scheduler(b) for b in brokers]
    loop = asyncio.get_running_loop()

    async def race(scheduler: Scheduler, broker: RedisBroker) -> None:
        end = loop.time() + 3.5
        while loop.time() < end:
            await scheduler.run_once(broker)
            await asyncio.sleep(0.02)

    await asyncio.gather(*(race(s, b) for s, b in zip(schedulers, brokers, strict=True)))

    entry = await brokers[0].get_schedule("flow")
    assert entry.last_fire_at is not None
    workflows = {w.id for w in await brokers[0].list_workflows(None)}
    assert len(workflows) >= 2
    # The fire times are whole seconds up to the last: the workflows are theirs, one each.
    expected = {schedule_workflow_id("flow", entry.last_fire_at - k) for k in range(len(workflows))}
    assert workflows == expected
    assert entry.last_task_id == schedule_workflow_id("flow", entry.last_fire_at)
    assert sorted(await first_steps(brokers[0])) == sorted(step_task_id(w, 0) for w in workflows)
    assert sum(s.fired for s in schedulers) == len(workflows)
    assert await pending_ids(brokers[0]) == (set(), set())


async def test_a_fired_workflow_runs_its_steps_across_slots(brokers: list[RedisBroker]) -> None:
    broker = brokers[0]
    stored, fire = await planned(broker)
    [outcome] = await broker.fire_schedules([fire])
    workflow_id = schedule_workflow_id("flow", stored.next_fire_at)
    assert outcome.stored == (workflow_id,)

    [lease] = await broker.claim([QUEUE], limit=1, lease_s=30)
    assert lease.task.id == step_task_id(workflow_id, 0)
    await broker.settle_step(lease, StepOutcome(succeeded=True, result=b"1"))

    async def second_enqueued() -> bool:
        tasks = await broker.list_tasks("sw-second", TaskState.PENDING)
        return [t.id for t in tasks] == [step_task_id(workflow_id, 1)]

    await eventually(second_enqueued, within=5)


async def test_a_pending_workflow_is_created_after_its_entry_was_removed(
    brokers: list[RedisBroker],
) -> None:
    # The fire was applied (the cursor moved) before the entry went: its workflow is owed.
    dead, other, _ = brokers
    stored, fire = await planned(dead)
    await dead._client.sadd(schedule_workflow_queues(dead._ns), QUEUE)  # as fire_schedules does
    await dead._fire_chunk(QUEUE, [fire])
    assert await other.remove_schedule("flow")
    assert await other.list_schedules() == []
    other._pending_grace_s = 0.0

    await other.due_schedules(limit=10)

    workflow_id = schedule_workflow_id("flow", stored.next_fire_at)
    assert [w.id for w in await other.list_workflows(None)] == [workflow_id]
    assert await pending_ids(other) == (set(), set())


@pytest.mark.parametrize(
    "case",
    [
        "test_a_workflow_entry_fired_twice_at_one_fire_time_creates_one_workflow",
        "test_concurrent_fires_of_a_workflow_entry_create_one_workflow",
        "test_a_fire_whose_workflow_exists_moves_the_cursor_and_creates_nothing",
    ],
)
async def test_the_conformance_cases_on_cluster(case: str, cluster: list[str]) -> None:
    """The conformance suite's workflow-entry cases (tests/conformance) on the 3-node Cluster."""
    broker = RedisBroker.from_url(
        f"redis+cluster://{cluster[0]},{cluster[1]}?namespace=swc{uuid.uuid4().hex[:8]}"
    )
    try:
        await getattr(conformance, case)(broker)
    finally:
        await broker.close()


async def test_a_creation_refused_by_the_broker_is_left_to_a_later_round(
    brokers: list[RedisBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, other, _ = brokers
    stored, fire = await planned(broker)
    workflow_id = schedule_workflow_id("flow", stored.next_fire_at)

    async def unavailable(workflow: NewWorkflow) -> None:
        raise BrokerUnavailableError("the workflow's node is down")

    monkeypatch.setattr(broker, "create_workflow", unavailable)
    [outcome] = await broker.fire_schedules([fire])

    assert outcome.applied and outcome.stored == (workflow_id,)  # fired: its record stays
    assert await broker.list_workflows(None) == []
    assert await pending_ids(broker) == ({workflow_id.encode()}, {workflow_id.encode()})
    other._pending_grace_s = 0.0
    await other.due_schedules(limit=10)
    assert [w.id for w in await other.list_workflows(None)] == [workflow_id]
    assert await pending_ids(other) == (set(), set())


async def test_a_queue_leaves_the_workflow_queue_set_once_nothing_needs_it(
    redis_url: str,
) -> None:
    # On a standalone server: the set, the index and the queue's records in one script.
    namespace = f"sw{uuid.uuid4().hex[:10]}"
    broker = RedisBroker.from_url(f"{redis_url}?namespace={namespace}")
    members = schedule_workflow_queues(namespace)
    try:
        stored, fire = await planned(broker)
        await broker._client.sadd(members, QUEUE)  # as fire_schedules does
        await broker._fire_chunk(QUEUE, [fire])  # recorded, not created (its scheduler died)

        await broker._forget_workflow_queue(QUEUE)  # the entry exists: it may fire again
        assert await broker._client.sismember(members, QUEUE)
        assert await broker.remove_schedule("flow")
        await broker._forget_workflow_queue(QUEUE)  # its workflow is still pending
        assert await broker._client.sismember(members, QUEUE)

        broker._pending_grace_s = 0.0
        await broker.due_schedules(limit=10)  # creates the pending workflow
        assert await pending_ids(broker) == (set(), set())
        await broker.due_schedules(limit=10)

        assert not await broker._client.sismember(members, QUEUE)
        workflow_id = schedule_workflow_id("flow", stored.next_fire_at)
        assert [w.id for w in await broker.list_workflows(None)] == [workflow_id]
    finally:
        await broker.close()
        await drop_namespace(redis_url, namespace)


async def test_a_queue_with_entries_stays_in_the_workflow_queue_set(
    brokers: list[RedisBroker],
) -> None:
    broker = brokers[0]
    _, fire = await planned(broker)
    assert (await broker.fire_schedules([fire]))[0].applied

    for _ in range(2):
        await broker.due_schedules(limit=10)

    members = schedule_workflow_queues(broker._ns)
    assert await broker._client.smembers(members) == {QUEUE.encode()}
