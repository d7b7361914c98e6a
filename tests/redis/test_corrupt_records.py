"""Records damaged in ways a script's checks once let through: no task may end up in no state set.

Redis keeps what a Lua script wrote before a runtime error (no rollback), and Python decoding
used to fail on values claim.lua accepted; either way whole batches were orphaned. Each case here
damages one task among good ones and checks that the good ones go on and the bad one is archived
with a reason (never lost), every task in exactly one state set.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
from redis_servers import namespaced_broker

from conveyor.brokers.redis import RedisBroker, keys
from conveyor.brokers.redis.records import CLAIM_FIELDS, decode_record
from conveyor.brokers.redis.replies import claimed_leases
from conveyor.errors import LeaseLostError
from conveyor.message import Completion, TaskMessage, TaskState

QUEUE = "default"
STATE_SETS = ("pending", "scheduled", "retry", "active", "archived", "completed")
IDS = ["g0", "g1", "bad", "g3", "g4"]
GOOD = [i for i in IDS if i != "bad"]


def _client(broker: RedisBroker) -> aioredis.Redis:
    client = broker._client
    assert isinstance(client, aioredis.Redis)
    return client


async def _sets_of(broker: RedisBroker, task_id: str) -> list[str]:
    k = keys.queue_keys(broker.namespace, QUEUE)
    client = _client(broker)
    return [s for s in STATE_SETS if await client.zscore(getattr(k, s), task_id) is not None]


async def _assert_one_set_each(broker: RedisBroker, ids: list[str]) -> dict[str, str]:
    where = {}
    for task_id in ids:
        found = await _sets_of(broker, task_id)
        assert len(found) == 1, (task_id, found)
        where[task_id] = found[0]
    return where


async def _enqueue(broker: RedisBroker) -> None:
    await broker.enqueue([TaskMessage(id=i, type="t", queue=QUEUE) for i in IDS])


async def _corrupt(broker: RedisBroker, task_id: str, field: str, value: bytes) -> None:
    client = _client(broker)
    tkey = keys.task(broker.namespace, QUEUE, task_id)
    if field == "<wrong type>":
        await client.delete(tkey)
        await client.set(tkey, value)
    else:
        await client.hset(tkey, field, value)


CORRUPTIONS = [
    ("<wrong type>", b"garbage", "not a hash (string)"),
    ("retried", b"1.0", "bad retried"),
    ("max_retry", b"2.5", "bad max_retry"),
    ("unique_key", b"\xff\xfe", "bad unique_key"),
    ("timeout", b"1e300", "bad timeout"),
    ("enqueued_at", b"1e300", "bad enqueued_at"),
    ("deadline", b"1e300", "bad deadline"),
    ("retention", b"-1e300", "bad retention"),
    ("failed_at", b"nan", "bad failed_at"),
    ("crashes", b"x", "bad crashes"),
]


@pytest.mark.parametrize("limit", [3, 10])
@pytest.mark.parametrize(("field", "value", "reason"), CORRUPTIONS)
async def test_claim_archives_the_corrupt_record_and_leases_its_neighbours(
    redis_url: str, field: str, value: bytes, reason: str, limit: int
) -> None:
    async with namespaced_broker(redis_url) as broker:
        await _enqueue(broker)
        await _corrupt(broker, "bad", field, value)

        leases = await broker.claim([QUEUE], limit=limit, lease_s=30)

        assert [lease.task.id for lease in leases] == GOOD[:limit]
        where = await _assert_one_set_each(broker, IDS)
        assert where == {
            "bad": "archived",
            **{i: "active" if i in GOOD[:limit] else "pending" for i in GOOD},
        }
        bad = await broker.get_task(QUEUE, "bad")
        assert bad.state is TaskState.ARCHIVED
        assert bad.last_error == f"corrupt record: {reason}"
        # A claimed task is ACTIVE with a lease in the record too.
        client = _client(broker)
        for lease in leases:
            tkey = keys.task(broker.namespace, QUEUE, lease.task.id)
            assert await client.hget(tkey, "state") == b"active"
            assert await client.hget(tkey, "lease") is not None
        # The rest are still claimable.
        rest = await broker.claim([QUEUE], limit=10, lease_s=30)
        assert [lease.task.id for lease in rest] == GOOD[limit:]


async def test_a_wrong_type_record_keeps_its_old_value(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        await _enqueue(broker)
        await _corrupt(broker, "bad", "<wrong type>", b"garbage")
        await broker.claim([QUEUE], limit=10, lease_s=30)
        client = _client(broker)
        tkey = keys.task(broker.namespace, QUEUE, "bad")
        dump = await client.hget(tkey, "corrupt_dump")
        assert dump is not None
        await client.restore(tkey + ":restored", 0, dump)
        assert await client.get(tkey + ":restored") == b"garbage"
        await client.delete(tkey + ":restored")


async def test_a_wrong_type_record_met_on_promotion_is_archived(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        await broker.enqueue(
            [TaskMessage(id=i, type="t", queue=QUEUE, process_in_s=0.05) for i in IDS]
        )
        await _corrupt(broker, "bad", "<wrong type>", b"garbage")
        await asyncio.sleep(0.1)
        leases = await broker.claim([QUEUE], limit=10, lease_s=30)
        assert [lease.task.id for lease in leases] == GOOD
        assert (await _assert_one_set_each(broker, IDS))["bad"] == "archived"


@pytest.mark.parametrize("how", ["retry", "archive"])
async def test_failing_a_task_whose_retried_is_not_an_integer_archives_it(
    redis_url: str, how: str
) -> None:
    async with namespaced_broker(redis_url) as broker:
        await _enqueue(broker)
        leases = {
            lease.task.id: lease for lease in await broker.claim([QUEUE], limit=10, lease_s=30)
        }
        await _corrupt(broker, "bad", "retried", b"1.0")

        if how == "retry":
            await broker.retry(leases["bad"], error="boom", delay_s=1)
        else:
            await broker.archive(leases["bad"], error="boom")

        where = await _assert_one_set_each(broker, IDS)
        assert where == {"bad": "archived", **{i: "active" for i in GOOD}}
        bad = await broker.get_task(QUEUE, "bad")
        assert bad.last_error == "corrupt record: bad retried (attempt failed: boom)"
        assert (await broker.queue_stats(QUEUE)).failed_today == 1


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("retried", b"1.0", "corrupt record: bad retried (attempt failed: "),
        ("crashes", b"x", "corrupt record: bad crashes"),
        ("<wrong type>", b"garbage", "corrupt record: not a hash (string)"),
        ("state", b"exploded", "corrupt record: bad state exploded"),
    ],
)
async def test_recovery_archives_a_corrupt_active_record_and_recovers_the_rest(
    redis_url: str, field: str, value: bytes, reason: str
) -> None:
    async with namespaced_broker(redis_url) as broker:
        await _enqueue(broker)
        assert len(await broker.claim([QUEUE], limit=10, lease_s=0.05)) == 5
        await _corrupt(broker, "bad", field, value)
        await asyncio.sleep(0.1)

        assert await broker.recover_expired(delay_s=60) == 5

        where = await _assert_one_set_each(broker, IDS)
        assert where == {"bad": "archived", **{i: "retry" for i in GOOD}}
        bad = await broker.get_task(QUEUE, "bad")
        assert bad.last_error is not None and bad.last_error.startswith(reason)
        assert await broker.recover_expired(delay_s=60) == 0


async def test_recovery_archives_an_active_entry_whose_record_is_missing(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        await _enqueue(broker)
        await broker.claim([QUEUE], limit=10, lease_s=0.05)
        await _client(broker).delete(keys.task(broker.namespace, QUEUE, "bad"))
        await asyncio.sleep(0.1)
        assert await broker.recover_expired(delay_s=60) == 5
        assert (await _assert_one_set_each(broker, IDS))["bad"] == "archived"
        assert (await broker.get_task(QUEUE, "bad")).last_error == "corrupt record: record missing"


async def test_lease_calls_on_a_wrong_type_record_report_the_lease_lost(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        await _enqueue(broker)
        leases = {
            lease.task.id: lease for lease in await broker.claim([QUEUE], limit=10, lease_s=30)
        }
        await _corrupt(broker, "bad", "<wrong type>", b"garbage")
        bad = leases.pop("bad")

        assert await broker.extend_leases([leases["g0"], bad, leases["g1"]], 30) == [
            True,
            False,
            True,
        ]
        assert await broker.complete(
            [Completion(lease=leases["g0"]), Completion(lease=bad), Completion(lease=leases["g1"])]
        ) == [True, False, True]
        with pytest.raises(LeaseLostError):
            await broker.release(bad)
        with pytest.raises(LeaseLostError):
            await broker.retry(bad, error="boom", delay_s=1)
        await broker.release(leases["g3"])

        # Still in the active set: recovery archives it once its lease expires.
        where = await _assert_one_set_each(broker, ["bad", "g3", "g4"])
        assert where == {"bad": "active", "g3": "pending", "g4": "active"}


def test_decoding_never_raises_on_out_of_range_values() -> None:
    fields = {
        b"state": b"archived",
        b"type": b"t",
        b"enqueued_at": b"1e300",
        b"failed_at": b"-1e300",
        b"completed_at": b"1e300",
        b"deadline": b"1e300",
        b"timeout": b"1e300",
        b"retention": b"1e300",
        b"ready": b"1e300",
        b"unique_key": b"\xff\xfe",
    }
    info = decode_record(QUEUE, "x", fields)
    assert (info.enqueued_at, info.last_failed_at, info.deadline, info.timeout) == (None,) * 4
    assert info.unique_key == "\ufffd\ufffd"


def test_an_undecodable_claimed_id_costs_only_its_own_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = [b"1", b"active", b"t", b"null", b"json", b"3", b"0"] + [None] * (
        len(CLAIM_FIELDS) - 7
    )
    reply = [1, 2_000_000, [], [1, b"a", 1, values], [1, b"\xff", 2, values], [1, b"c", 3, values]]
    with caplog.at_level(logging.ERROR, logger="conveyor.brokers.redis.broker"):
        leases = claimed_leases([QUEUE], reply)
    assert [lease.task.id for lease in leases] == ["a", "c"]
    assert any("cannot be decoded" in r.getMessage() for r in caplog.records)
