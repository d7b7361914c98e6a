"""Enqueue: stored fields, immediate vs scheduled, id conflicts, all-or-nothing batches."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from conformance.factories import QUEUE, claim_one, enqueue_one, is_utc, msg, new_id
from conveyor.brokers.protocol import Broker
from conveyor.errors import DuplicateTaskError, TaskIdConflictError, TaskNotFoundError
from conveyor.message import Completion, Encoding, TaskState


async def test_enqueue_returns_pending_task_with_every_field(broker: Broker) -> None:
    deadline = time.time() + 3600
    info = await enqueue_one(
        broker,
        type="email:send",
        payload={"to": "a@example.com", "n": [1, 2.5, None, True]},
        max_retry=3,
        timeout_s=12.5,
        deadline=deadline,
        retention_s=60.0,
        unique_key="u-fields",
        unique_ttl_s=600.0,
    )

    assert info.state is TaskState.PENDING
    assert (info.queue, info.type) == (QUEUE, "email:send")
    assert info.payload == {"to": "a@example.com", "n": [1, 2.5, None, True]}
    assert info.encoding is Encoding.JSON
    assert (info.max_retry, info.retried, info.last_error) == (3, 0, None)
    assert info.timeout == timedelta(seconds=12.5)
    assert info.deadline is not None and abs(info.deadline.timestamp() - deadline) < 0.001
    assert info.retention == timedelta(seconds=60)
    assert info.unique_key == "u-fields"
    assert is_utc(info.enqueued_at) and is_utc(info.deadline)
    assert info.completed_at is None and info.raw_result is None
    stored = await broker.get_task(QUEUE, info.id)
    assert stored.payload == info.payload and stored.state is TaskState.PENDING
    assert stored.enqueued_at is not None and info.enqueued_at is not None
    assert abs(stored.enqueued_at - info.enqueued_at) < timedelta(milliseconds=2)


async def test_enqueue_with_defaults_has_no_optional_fields(broker: Broker) -> None:
    info = await enqueue_one(broker)

    stored = await broker.get_task(QUEUE, info.id)
    assert stored.payload is None
    assert (stored.timeout, stored.deadline, stored.unique_key) == (None, None, None)
    assert stored.retention == timedelta(0)
    assert stored.last_failed_at is None


async def test_bytes_payload_round_trips_untouched(broker: Broker) -> None:
    raw = bytes(range(256))
    info = await enqueue_one(broker, payload=raw, encoding=Encoding.BYTES)

    stored = await broker.get_task(QUEUE, info.id)
    assert stored.encoding is Encoding.BYTES
    assert stored.payload == raw
    lease = await claim_one(broker)
    assert lease.task.payload == raw


async def test_unicode_json_payload_round_trips(broker: Broker) -> None:
    payload = {"text": "héllo ✓ 日本", "nested": {"deep": [{"x": -1}]}}
    info = await enqueue_one(broker, payload=payload)

    assert (await broker.get_task(QUEUE, info.id)).payload == payload
    assert (await claim_one(broker)).task.payload == payload


async def test_future_process_in_is_scheduled(broker: Broker) -> None:
    before = time.time()
    info = await enqueue_one(broker, process_in_s=3600)

    assert info.state is TaskState.SCHEDULED
    assert is_utc(info.next_process_at)
    assert info.next_process_at is not None
    assert info.next_process_at.timestamp() >= before + 3600 - 5  # broker clock, loose bound


async def test_future_process_at_is_scheduled_at_that_time(broker: Broker) -> None:
    when = time.time() + 3600
    info = await enqueue_one(broker, process_at=when)

    assert info.state is TaskState.SCHEDULED
    assert info.next_process_at is not None
    assert abs(info.next_process_at.timestamp() - when) < 0.001


async def test_past_process_at_and_zero_delay_are_pending(broker: Broker) -> None:
    past = await enqueue_one(broker, process_at=time.time() - 60)
    now = await enqueue_one(broker, process_in_s=0)

    assert past.state is TaskState.PENDING
    assert now.state is TaskState.PENDING


async def test_empty_batch_stores_nothing(broker: Broker) -> None:
    assert await broker.enqueue([]) == []


async def test_batch_is_stored_in_order(broker: Broker) -> None:
    messages = [msg(payload=i) for i in range(5)]

    infos = await broker.enqueue(messages)

    assert [i.id for i in infos] == [m.id for m in messages]
    assert [i.payload for i in infos] == list(range(5))


async def test_batch_may_span_queues(broker: Broker) -> None:
    a, b = msg(queue="batch-a"), msg(queue="batch-b")

    await broker.enqueue([a, b])

    assert (await broker.get_task("batch-a", a.id)).state is TaskState.PENDING
    assert (await broker.get_task("batch-b", b.id)).state is TaskState.PENDING


async def test_same_id_in_another_queue_is_a_different_task(broker: Broker) -> None:
    task_id = new_id()
    await enqueue_one(broker, id=task_id, queue="q1")
    await enqueue_one(broker, id=task_id, queue="q2")

    assert (await broker.get_task("q1", task_id)).queue == "q1"
    assert (await broker.get_task("q2", task_id)).queue == "q2"


async def _pending(broker: Broker) -> str:
    return (await enqueue_one(broker)).id


async def _scheduled(broker: Broker) -> str:
    return (await enqueue_one(broker, process_in_s=3600)).id


async def _active(broker: Broker) -> str:
    info = await enqueue_one(broker)
    await claim_one(broker)
    return info.id


async def _retry(broker: Broker) -> str:
    info = await enqueue_one(broker)
    await broker.retry(await claim_one(broker), error="boom", delay_s=3600)
    return info.id


async def _archived(broker: Broker) -> str:
    info = await enqueue_one(broker)
    await broker.archive(await claim_one(broker), error="boom")
    return info.id


async def _completed(broker: Broker) -> str:
    info = await enqueue_one(broker, retention_s=3600)
    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]
    return info.id


@pytest.mark.parametrize(
    ("make", "state"),
    [
        (_pending, TaskState.PENDING),
        (_scheduled, TaskState.SCHEDULED),
        (_active, TaskState.ACTIVE),
        (_retry, TaskState.RETRY),
        (_archived, TaskState.ARCHIVED),
        (_completed, TaskState.COMPLETED),
    ],
)
async def test_id_conflicts_with_a_task_in_any_state(broker: Broker, make, state) -> None:
    task_id = await make(broker)
    before = await broker.get_task(QUEUE, task_id)
    assert before.state is state

    with pytest.raises(TaskIdConflictError) as caught:
        await broker.enqueue([msg(id=task_id, payload="other")])

    assert (caught.value.task_id, caught.value.queue) == (task_id, QUEUE)
    assert await broker.get_task(QUEUE, task_id) == before


async def test_batch_with_a_conflicting_id_stores_nothing(broker: Broker) -> None:
    existing = await enqueue_one(broker)
    fresh = [msg(), msg(queue="other-q")]

    with pytest.raises(TaskIdConflictError):
        await broker.enqueue([*fresh, msg(id=existing.id)])

    for m in fresh:
        with pytest.raises(TaskNotFoundError):
            await broker.get_task(m.queue, m.id)
    assert (await broker.queue_stats(QUEUE)).pending == 1


async def test_batch_repeating_an_id_is_refused(broker: Broker) -> None:
    first = msg()

    with pytest.raises(TaskIdConflictError):
        await broker.enqueue([first, msg(id=first.id)])

    with pytest.raises(TaskNotFoundError):
        await broker.get_task(QUEUE, first.id)


async def test_batch_with_a_duplicate_unique_key_stores_nothing(broker: Broker) -> None:
    await enqueue_one(broker, unique_key="held", unique_ttl_s=600)
    fresh = msg()

    with pytest.raises(DuplicateTaskError):
        await broker.enqueue([fresh, msg(unique_key="held", unique_ttl_s=600)])

    with pytest.raises(TaskNotFoundError):
        await broker.get_task(QUEUE, fresh.id)
    assert (await broker.queue_stats(QUEUE)).pending == 1


async def test_payload_of_a_mebibyte_round_trips(broker: Broker) -> None:
    raw = bytes(range(256)) * 4096
    info = await enqueue_one(broker, payload=raw, encoding=Encoding.BYTES)

    assert (await broker.get_task(QUEUE, info.id)).payload == raw
    assert (await claim_one(broker)).task.payload == raw


async def test_concurrent_enqueues_each_stay_all_or_nothing(broker: Broker) -> None:
    # Backends may store calls that arrive together in one step (Redis, SQLite combine them);
    # each call must still succeed or fail on its own, with its own error.
    await broker.enqueue([msg(id="taken")])
    calls = [broker.enqueue([msg(id=f"ok-{i}"), msg(id=f"ok2-{i}")]) for i in range(20)]
    calls.insert(5, broker.enqueue([msg(id="new", queue="fresh-a"), msg(id="taken")]))
    calls.insert(9, broker.enqueue([msg(id="u1", unique_key="k"), msg(id="u2", unique_key="k")]))
    calls.insert(12, broker.enqueue([msg(id="solo", queue="fresh-b")]))

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[5], TaskIdConflictError) and results[5].task_id == "taken"
    assert isinstance(results[9], DuplicateTaskError) and results[9].task_id == "u2"
    stored = [r for i, r in enumerate(results) if i not in (5, 9)]
    assert all(isinstance(r, list) for r in stored)
    assert (await broker.queue_stats(QUEUE)).pending == 1 + 40
    assert (await broker.queue_stats("fresh-a")).pending == 0
    assert "fresh-b" in await broker.list_queues()
    for refused in ("new", "u1", "u2"):
        queue = "fresh-a" if refused == "new" else QUEUE
        with pytest.raises(TaskNotFoundError):
            await broker.get_task(queue, refused)
    await broker.enqueue([msg(id="later", queue="fresh-a")])  # its queue is listed once used
    assert "fresh-a" in await broker.list_queues()
