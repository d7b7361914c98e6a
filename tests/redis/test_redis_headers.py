"""Redis: headers are one field of the task hash, written only for a task that has some."""

from __future__ import annotations

import asyncio

import redis.asyncio
from redis_servers import namespaced_broker

from conveyor.brokers.redis import keys
from conveyor.headers import encode_headers
from conveyor.message import TaskMessage

HEADERS = encode_headers({"traceparent": "00-aa-bb-01", "bin": "\x00\u2713 \n"})


async def test_headers_are_a_hash_field_only_when_set_on_both_enqueue_paths(
    redis_url: str,
) -> None:
    async with namespaced_broker(redis_url) as broker:
        with_a = TaskMessage(id="with-a", type="t", headers=HEADERS)
        without_a = TaskMessage(id="without-a", type="t")
        with_s = TaskMessage(id="with-s", type="t", queue="other", headers=HEADERS)
        without_s = TaskMessage(id="without-s", type="t", queue="other")
        await broker.enqueue([without_a, with_a])
        await asyncio.to_thread(broker.enqueue_blocking, [with_s, without_s])

        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            stored = {
                m.id: await client.hget(keys.task(broker.namespace, m.queue, m.id), "headers")
                for m in (with_a, without_a, with_s, without_s)
            }
            fields = await client.hkeys(keys.task(broker.namespace, "default", "without-a"))
        finally:
            await client.aclose()
        assert stored == {
            "with-a": HEADERS,
            "without-a": None,
            "with-s": HEADERS,
            "without-s": None,
        }
        assert b"headers" not in fields
        leases = await broker.claim(["default", "other"], limit=4, lease_s=30)
        assert {lease.task.id: lease.task.raw_headers for lease in leases} == stored
