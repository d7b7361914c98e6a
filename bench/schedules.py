"""A scheduler with many entries on Redis: CPU per second of scheduling, and fire lateness.

Run from the repository root: ``python bench/schedules.py [--redis-url URL] [--entries N]
[--seconds S] [--schedulers K] [--queues Q]``.

Stores ``--entries`` entries (default 10,000) in a namespace of its own, spread over
``--queues`` queues: each fires once a minute at a second of its own (six-field cron
``<s> * * * * *``, the seconds spread evenly), so about entries/60 fire each second. Then runs
``--schedulers`` schedulers in this process for ``--seconds`` and prints:

- fires, and fires per second;
- this process's CPU time per second of wall time (the schedulers' cost), and the Redis
  server's (``INFO cpu``, server-wide: run it on a Redis nothing else uses);
- fire lateness: each task's enqueue time (broker clock) minus its fire time, p50 / p99 / max,
  for the fire times after the first ``--warmup`` seconds (the first rounds catch up with the
  entries that fell due while they were being stored).

The namespace is deleted afterwards (never FLUSHDB).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

import redis

from conveyor.brokers.redis import RedisBroker
from conveyor.message import TaskState
from conveyor.options import TaskOptions
from conveyor.scheduling.entry import new_entry
from conveyor.scheduling.scheduler import Scheduler


def server_cpu(admin: redis.Redis) -> float:
    info = admin.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def fire_time(task_id: str) -> float:
    stamp = task_id.rsplit(":", 1)[1]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


async def store_entries(broker: RedisBroker, entries: int, queues: int) -> None:
    now = await broker.schedule_clock()
    for i in range(entries):
        entry = new_entry(
            name=f"bench.e{i}",
            task_type="bench.tick",
            payload={"n": i},
            cron=f"{i % 60} * * * * *",
            every=None,
            tz="UTC",
            missed="skip",
            options=TaskOptions(queue=f"bench{i % queues}"),
        )
        await broker.put_schedule(entry.record(owner=None, next_fire_at=entry.spec.next_after(now)))


async def lateness(broker: RedisBroker, queues: int, since: float) -> list[float]:
    """Enqueue time minus fire time of every task whose fire time is after ``since`` (fires
    due while the entries were being stored are left out: they were late by design)."""
    late: list[float] = []
    for q in range(queues):
        offset = 0
        while page := await broker.list_tasks(
            f"bench{q}", TaskState.PENDING, offset=offset, limit=1000
        ):
            for task in page:
                assert task.enqueued_at is not None
                if fire_time(task.id) > since:
                    late.append(task.enqueued_at.timestamp() - fire_time(task.id))
            offset += len(page)
    return late


async def run(args: argparse.Namespace) -> None:
    namespace = f"conveyor-bench-{uuid.uuid4().hex[:8]}"
    url = f"{args.redis_url}?namespace={namespace}"
    admin = redis.Redis.from_url(args.redis_url)
    broker = RedisBroker.from_url(url)
    try:
        started = time.monotonic()
        await store_entries(broker, args.entries, args.queues)
        print(f"stored {args.entries} entries in {time.monotonic() - started:.1f}s")
        schedulers = [Scheduler(RedisBroker.from_url(url)) for _ in range(args.schedulers)]
        cpu0, server0, wall0 = time.process_time(), server_cpu(admin), time.monotonic()
        since = await broker.schedule_clock() + args.warmup
        tasks = [asyncio.create_task(s.serve()) for s in schedulers]
        await asyncio.sleep(args.seconds)
        for s in schedulers:
            s.request_stop()
        await asyncio.gather(*tasks)
        wall = time.monotonic() - wall0
        cpu, server = time.process_time() - cpu0, server_cpu(admin) - server0
        late = sorted(await lateness(broker, args.queues, since))
        fired = sum(s.fired for s in schedulers)
        print(f"schedulers: {args.schedulers}, queues: {args.queues}, run: {wall:.1f}s")
        print(f"fires: {fired} ({fired / wall:.0f}/s); measured: {len(late)}")
        print(f"CPU per second: schedulers {cpu / wall:.3f}s, Redis server {server / wall:.3f}s")
        if late:
            p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
            print(
                f"fire lateness: p50 {statistics.median(late) * 1000:.1f} ms, "
                f"p99 {p99 * 1000:.1f} ms, max {late[-1] * 1000:.1f} ms"
            )
    finally:
        await broker.close()
        keys = list(admin.scan_iter(match=f"{namespace}:*", count=1000))
        for first in range(0, len(keys), 500):
            admin.unlink(*keys[first : first + 500])
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--schedulers", type=int, default=1)
    parser.add_argument("--queues", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=5.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
