"""The schedule store on every broker: entries, the cursor's compare-and-set, fire dedup."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest

from conformance.factories import QUEUE, msg
from conveyor.brokers.protocol import Broker
from conveyor.brokers.schedules import ScheduleFire, ScheduleRecord, ScheduleStore
from conveyor.errors import ScheduleNotFoundError
from conveyor.message import TaskState, encode_json


def store_of(broker: Broker) -> ScheduleStore:
    assert isinstance(broker, ScheduleStore)
    return broker


def record(name: str = "nightly", **overrides: object) -> ScheduleRecord:
    fields: dict[str, object] = {
        "name": name,
        "task_type": "report:nightly",
        "queue": QUEUE,
        "payload": encode_json({"full": True}),
        "options": '{"max_retry":3}',
        "every_us": 60_000_000,
        "owner": "app",
        "revision": uuid.uuid4().hex,
        "next_fire_at": 1_000.0,
    }
    fields.update(overrides)
    return ScheduleRecord(**fields)  # type: ignore[arg-type]


def fire_of(r: ScheduleRecord, *, ids: list[str], next_at: float) -> ScheduleFire:
    return ScheduleFire(
        name=r.name,
        queue=r.queue,
        revision=r.revision,
        expected_next=r.next_fire_at,
        next_fire_at=next_at,
        fire_at=r.next_fire_at,
        messages=tuple(msg(id=i, type=r.task_type) for i in ids),
    )


async def test_put_get_list_and_remove(broker: Broker) -> None:
    store = store_of(broker)
    stored = await store.put_schedule(record("b"))
    await store.put_schedule(record("a", cron="0 * * * *", every_us=None, tz="Europe/Paris"))

    assert stored == record("b", revision=stored.revision)
    assert await store.get_schedule("b") == stored
    listed = await store.list_schedules()
    assert [r.name for r in listed] == ["a", "b"]
    assert (listed[0].cron, listed[0].every_us, listed[0].tz) == ("0 * * * *", None, "Europe/Paris")
    assert await store.remove_schedule("b") is True
    assert await store.remove_schedule("b") is False
    with pytest.raises(ScheduleNotFoundError) as caught:
        await store.get_schedule("b")
    assert caught.value.name == "b"
    assert isinstance(caught.value, LookupError)


async def test_an_identical_definition_keeps_the_stored_entry_and_its_cursor(
    broker: Broker,
) -> None:
    store = store_of(broker)
    first = await store.put_schedule(record(next_fire_at=1_000.0))
    await store.pause_schedule("nightly")

    again = await store.put_schedule(record(next_fire_at=5_000.0))

    assert again.revision == first.revision
    assert (again.next_fire_at, again.paused) == (1_000.0, True)


async def test_a_changed_definition_replaces_it_but_keeps_the_pause(broker: Broker) -> None:
    store = store_of(broker)
    first = await store.put_schedule(record())
    await store.pause_schedule("nightly")

    changed = await store.put_schedule(record(every_us=30_000_000, next_fire_at=5_000.0))

    assert changed.revision != first.revision
    assert (changed.every_us, changed.next_fire_at, changed.paused) == (30_000_000, 5_000.0, True)


async def test_remove_at_a_revision_leaves_a_replaced_entry(broker: Broker) -> None:
    store = store_of(broker)
    old = await store.put_schedule(record())
    await store.put_schedule(record(every_us=1_000_000))

    assert await store.remove_schedule("nightly", revision=old.revision) is False
    assert [r.name for r in await store.list_schedules()] == ["nightly"]


async def test_pause_and_unpause_unknown_names_raise(broker: Broker) -> None:
    store = store_of(broker)
    with pytest.raises(ScheduleNotFoundError):
        await store.pause_schedule("ghost")
    with pytest.raises(ScheduleNotFoundError):
        await store.unpause_schedule("ghost", revision="x", next_fire_at=1.0)


async def test_due_lists_unpaused_entries_due_by_the_broker_clock(broker: Broker) -> None:
    store = store_of(broker)
    now = await store.schedule_clock()
    await store.put_schedule(record("late", next_fire_at=now - 10))
    await store.put_schedule(record("early", next_fire_at=now - 20))
    await store.put_schedule(record("paused", next_fire_at=now - 30))
    await store.pause_schedule("paused")
    await store.put_schedule(record("future", next_fire_at=now + 3600))

    due = await store.due_schedules(limit=10)

    assert [r.name for r in due.due] == ["early", "late"]
    assert due.next_at == now + 3600
    assert due.now >= now
    assert [r.name for r in (await store.due_schedules(limit=1)).due] == ["early"]


async def test_a_fire_enqueues_and_moves_the_cursor_in_one_step(broker: Broker) -> None:
    store = store_of(broker)
    now = await store.schedule_clock()
    r = await store.put_schedule(record(next_fire_at=now - 1))

    [outcome] = await store.fire_schedules([fire_of(r, ids=["nightly:1"], next_at=now + 59)])

    assert outcome.applied and outcome.stored == ("nightly:1",)
    task = await broker.get_task(QUEUE, "nightly:1")
    assert (task.state, task.type) == (TaskState.PENDING, "report:nightly")
    after = await store.get_schedule("nightly")
    assert (after.next_fire_at, after.last_fire_at, after.last_task_id) == (
        now + 59,
        now - 1,
        "nightly:1",
    )


async def test_a_second_fire_of_the_same_cursor_is_stale_and_enqueues_nothing(
    broker: Broker,
) -> None:
    store = store_of(broker)
    now = await store.schedule_clock()
    r = await store.put_schedule(record(next_fire_at=now - 1))
    first = fire_of(r, ids=["nightly:a"], next_at=now + 59)
    rival = fire_of(r, ids=["nightly:b"], next_at=now + 58)

    outcomes = await store.fire_schedules([first, rival])

    assert [o.applied for o in outcomes] == [True, False]
    assert (await store.get_schedule("nightly")).next_fire_at == now + 59
    listed = await broker.list_tasks(QUEUE, TaskState.PENDING)
    assert [t.id for t in listed] == ["nightly:a"]


async def test_concurrent_schedulers_fire_each_cursor_once(broker: Broker) -> None:
    store = store_of(broker)
    now = await store.schedule_clock()
    r = await store.put_schedule(record(next_fire_at=now - 1))
    fires = [fire_of(r, ids=[f"nightly:{i}"], next_at=now + 60) for i in range(8)]

    results = await asyncio.gather(*(store.fire_schedules([f]) for f in fires))

    assert sum(o.applied for [o] in results) == 1
    assert len(await broker.list_tasks(QUEUE, TaskState.PENDING)) == 1


async def test_fires_of_a_paused_replaced_or_removed_entry_are_stale(broker: Broker) -> None:
    store = store_of(broker)
    now = await store.schedule_clock()
    paused = await store.put_schedule(record("p", next_fire_at=now - 1))
    await store.pause_schedule("p")
    old = await store.put_schedule(record("r", next_fire_at=now - 1))
    await store.put_schedule(record("r", every_us=1_000_000, next_fire_at=now - 1))
    gone = await store.put_schedule(record("g", next_fire_at=now - 1))
    await store.remove_schedule("g")

    outcomes = await store.fire_schedules(
        [fire_of(x, ids=[f"{x.name}:1"], next_at=now + 60) for x in (paused, old, gone)]
    )

    assert [o.applied for o in outcomes] == [False, False, False]
    assert await broker.list_tasks(QUEUE, TaskState.PENDING) == []


async def test_a_taken_id_or_unique_key_is_skipped_and_the_cursor_still_moves(
    broker: Broker,
) -> None:
    store = store_of(broker)
    now = await store.schedule_clock()
    await broker.enqueue([msg(id="nightly:taken"), msg(id="holder", unique_key="k")])
    r = await store.put_schedule(record(next_fire_at=now - 1))
    messages = (
        msg(id="nightly:taken"),
        msg(id="nightly:dup", unique_key="k", unique_ttl_s=60.0),
        msg(id="nightly:new"),
    )
    fire = replace(fire_of(r, ids=[], next_at=now + 60), messages=messages)

    [outcome] = await store.fire_schedules([fire])

    assert outcome.applied and outcome.stored == ("nightly:new",)
    after = await store.get_schedule("nightly")
    assert (after.next_fire_at, after.last_task_id) == (now + 60, "nightly:new")


async def test_unpause_sets_the_cursor_only_at_the_same_revision(broker: Broker) -> None:
    store = store_of(broker)
    r = await store.put_schedule(record(next_fire_at=100.0))
    await store.pause_schedule("nightly")

    assert await store.unpause_schedule("nightly", revision="other", next_fire_at=900.0) is False
    assert (await store.get_schedule("nightly")).paused is True
    assert await store.unpause_schedule("nightly", revision=r.revision, next_fire_at=900.0)
    after = await store.get_schedule("nightly")
    assert (after.paused, after.next_fire_at) == (False, 900.0)
    # Unpausing an entry that is not paused leaves its cursor alone.
    assert await store.unpause_schedule("nightly", revision=r.revision, next_fire_at=5.0)
    assert (await store.get_schedule("nightly")).next_fire_at == 900.0


async def test_entries_survive_deleting_their_queue(broker: Broker) -> None:
    store = store_of(broker)
    await store.put_schedule(record())

    await broker.delete_queue(QUEUE, force=True)

    assert [r.name for r in await store.list_schedules()] == ["nightly"]
