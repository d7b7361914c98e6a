"""Redis memory per stored task: what to plan ``maxmemory`` with.

Run from the repository root: ``python bench/memory.py [--redis-url URL] [--tasks N]``.

Against a Redis that nothing else writes to while it runs (``used_memory`` is server-wide), for
each payload size it stores ``--tasks`` tasks (``Client.enqueue_many``, 1,000 a call) in a
namespace of its own and prints ``used_memory`` growth per task in each state a task waits in:

- pending (``enqueue_many``), and pending with a ``unique`` lock (one more key per task);
- scheduled (``process_in``);
- completed and kept (``retention``): the task claimed and completed with a result of the
  payload's size;
- archived (out of retries).

Each namespace is deleted afterwards (never FLUSHDB), and the memory it held comes back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import redis

from conveyor import Client, Task
from conveyor.brokers.redis import RedisBroker
from conveyor.message import Completion

BATCH = 1_000
PAYLOADS = {"20 B": {"user_id": 42}, "1 KiB": {"body": "x" * 1010}}


def used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


def store(url: str, tasks: int, payload: dict[str, Any], **options: Any) -> None:
    with Client(url) as client:
        for start in range(0, tasks, BATCH):
            count = min(BATCH, tasks - start)
            if "unique" in options:  # unique tasks must differ to be stored side by side
                batch = [Task("bench.memory", {**payload, "n": start + i}) for i in range(count)]
            else:
                batch = [Task("bench.memory", payload) for _ in range(count)]
            client.enqueue_many(batch, **options)


async def settle(broker: RedisBroker, outcome: str, payload_size: int) -> None:
    """Claim every task and complete it (kept) or fail it for good (archived)."""
    result = b'"' + b"r" * max(payload_size - 2, 0) + b'"'
    while True:
        leases = await broker.claim(["default"], limit=BATCH, lease_s=300)
        if not leases:
            break
        if outcome == "completed":
            await broker.complete([Completion(lease=lease, result=result) for lease in leases])
        else:
            for lease in leases:
                await broker.archive(lease, error="bench: failed for good")
    await broker.close()


def measure(admin: redis.Redis, url: str, tasks: int, state: str, payload: dict[str, Any]) -> float:
    namespace = f"bench-mem-{uuid.uuid4().hex[:8]}"
    full = f"{url}?namespace={namespace}"
    before = used_memory(admin)
    options: dict[str, Any] = {}
    if state == "pending, unique":
        options["unique"] = timedelta(hours=1)
    elif state == "scheduled":
        options["process_in"] = timedelta(hours=1)
    elif state == "completed, kept":
        options["retention"] = timedelta(hours=1)
    elif state == "archived":
        options["max_retry"] = 0
    store(full, tasks, payload, **options)
    if state in ("completed, kept", "archived"):
        size = len(json.dumps(payload))
        asyncio.run(settle(RedisBroker.from_url(full), state.split(",")[0], size))
    grown = used_memory(admin) - before
    keys = list(admin.scan_iter(match=f"{namespace}:*", count=10_000))
    for start in range(0, len(keys), 1_000):
        admin.delete(*keys[start : start + 1_000])
    return grown / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--tasks", type=int, default=50_000)
    args = parser.parse_args()
    admin = redis.Redis.from_url(args.redis_url)
    version = admin.info("server")["redis_version"]
    states = ["pending", "pending, unique", "scheduled", "completed, kept", "archived"]
    print(f"Redis {version} at {args.redis_url}, {args.tasks:,} tasks a row; bytes per task")
    print(f"{'state':<18}" + "".join(f"{name:>12}" for name in PAYLOADS))
    for state in states:
        figures = [measure(admin, args.redis_url, args.tasks, state, p) for p in PAYLOADS.values()]
        print(f"{state:<18}" + "".join(f"{f:>12,.0f}" for f in figures))


if __name__ == "__main__":
    main()
