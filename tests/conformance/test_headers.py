"""Task headers: stored with the task, returned by claim and the inspector, kept through retries."""

from __future__ import annotations

import pytest

from conformance.factories import QUEUE, claim_one, enqueue_one, msg
from conformance.test_leases import SHORT_LEASE_S, recover
from conveyor import AsyncClient, Task
from conveyor.brokers.protocol import Broker
from conveyor.errors import HeadersError
from conveyor.headers import MAX_HEADERS, MAX_HEADERS_BYTES, encode_headers
from conveyor.message import TaskState

HEADERS = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "é": "日本 ✓"}


async def test_headers_round_trip_through_enqueue_get_list_and_claim(broker: Broker) -> None:
    info = await enqueue_one(broker, headers=encode_headers(HEADERS))

    assert dict(info.headers) == HEADERS
    assert dict((await broker.get_task(QUEUE, info.id)).headers) == HEADERS
    [listed] = await broker.list_tasks(QUEUE, TaskState.PENDING)
    assert dict(listed.headers) == HEADERS
    lease = await claim_one(broker)
    assert dict(lease.task.headers) == HEADERS
    with pytest.raises(TypeError):
        lease.task.headers["x"] = "y"  # type: ignore[index]  # read-only


async def test_a_task_without_headers_has_none(broker: Broker) -> None:
    info = await enqueue_one(broker)

    assert info.raw_headers is None and dict(info.headers) == {}
    stored = await broker.get_task(QUEUE, info.id)
    assert stored.raw_headers is None and dict(stored.headers) == {}
    assert (await claim_one(broker)).task.raw_headers is None


async def test_each_message_of_a_mixed_batch_keeps_its_own_headers(broker: Broker) -> None:
    wanted = [{"n": "0"}, None, {"n": "2", "x": "y"}, None, {"n": "4"}]
    messages = [
        msg(queue=QUEUE if i % 2 else "other", headers=encode_headers(h))
        for i, h in enumerate(wanted)
    ]
    await broker.enqueue(messages)

    for m, h in zip(messages, wanted, strict=True):
        assert dict((await broker.get_task(m.queue, m.id)).headers) == (h or {})
    leases = await broker.claim([QUEUE, "other"], limit=10, lease_s=30)
    got = {lease.task.id: dict(lease.task.headers) for lease in leases}
    assert got == {m.id: h or {} for m, h in zip(messages, wanted, strict=True)}


async def test_retry_release_archive_rerun_and_recovery_keep_headers(broker: Broker) -> None:
    info = await enqueue_one(broker, max_retry=5, headers=encode_headers(HEADERS))

    await broker.retry(await claim_one(broker), error="boom", delay_s=0)
    await broker.release(await claim_one(broker))
    await broker.archive(await claim_one(broker), error="dead")
    assert dict((await broker.get_task(QUEUE, info.id)).headers) == HEADERS
    await broker.run_task(QUEUE, info.id)
    await claim_one(broker, lease_s=SHORT_LEASE_S)
    await recover(broker, delay_s=0)

    again = await claim_one(broker)
    assert again.task.id == info.id and again.task.retried == 3
    assert dict(again.task.headers) == HEADERS


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"n": 1}, "must be a str"),
        ({1: "x"}, "header name"),
        ({"": "x"}, "header name"),
        ({f"h{i}": "" for i in range(MAX_HEADERS + 1)}, "at most"),
        ({"big": "x" * MAX_HEADERS_BYTES}, "byte limit"),
        ({"bad": "\ud800"}, "not valid text"),
        (["traceparent"], "mapping"),
    ],
)
async def test_bad_headers_are_refused_and_nothing_is_stored(
    broker: Broker, headers: object, why: str
) -> None:
    client = AsyncClient(broker)
    with pytest.raises(HeadersError, match=why):
        await client.enqueue(Task("test:echo", 1), headers=headers)  # type: ignore[arg-type]
    with pytest.raises(HeadersError, match=why):
        await client.enqueue(Task("test:echo", 1, headers))  # type: ignore[arg-type]
    with pytest.raises(HeadersError, match=why):
        await client.enqueue_many([Task("test:echo", 1), Task("test:echo", 2, headers)])  # type: ignore[arg-type]

    assert await broker.list_tasks(QUEUE, TaskState.PENDING) == []


async def test_client_merges_task_and_call_headers_and_empty_means_none(broker: Broker) -> None:
    client = AsyncClient(broker)
    info = await client.enqueue(Task("test:echo", 1, {"a": "1", "b": "1"}), headers={"b": "2"})
    empty = await client.enqueue(Task("test:echo", 2, {}), headers={})

    assert dict((await broker.get_task(QUEUE, info.id)).headers) == {"a": "1", "b": "2"}
    assert (await broker.get_task(QUEUE, empty.id)).raw_headers is None
    leases = await broker.claim([QUEUE], limit=2, lease_s=30)
    assert [dict(lease.task.headers) for lease in leases] == [{"a": "1", "b": "2"}, {}]
