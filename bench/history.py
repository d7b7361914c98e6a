"""What the attempt history costs a drain: tasks claimed and settled straight on a broker.

Run from the repository root, once per code tree to compare (alternate the runs: the machine's
load drifts)::

    .venv/bin/python bench/history.py [--tasks 5000] [--brokers sqlite,redis,memory]
    PYTHONPATH=<other tree>/src .venv/bin/python bench/history.py

Two drains per broker, in one process, no worker: ``success`` (every task completes on its first
attempt: the history must cost nothing) and ``retry`` (every task fails once, then completes:
one record written per task). Claims and settlements go in batches of 100, as a busy worker's
do. Prints tasks per second and CPU per task for each (give Redis a server of its own, e.g.
``redis-server --port 6390 --save ''``, for its CPU figure to be the drain's); Redis keys live
under a fresh namespace, deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import redis

import conveyor
from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.protocol import Broker
from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.message import Completion, TaskMessage

BATCH = 100


def server_cpu_s(redis_url: str | None) -> float:
    """The Redis server's CPU seconds so far (user + system), or 0 without Redis."""
    if redis_url is None:
        return 0.0
    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def drain(
    broker: Broker, queue: str, tasks: int, *, fail_once: bool, redis_url: str | None
) -> tuple[float, float]:
    """Enqueue ``tasks``, then claim and settle them all.

    Returns tasks per second, and CPU microseconds per task: this process's (the SQLite
    broker's thread included) plus, on Redis, the server's. CPU time is steadier than the rate
    on a busy machine; the server's is only this drain's when nothing else uses that server.
    """
    messages = [TaskMessage(id=uuid.uuid4().hex, type="t", queue=queue) for _ in range(tasks)]
    for i in range(0, tasks, 1000):
        await broker.enqueue(messages[i : i + 1000])
    failed: set[str] = set()
    done = 0
    cpu = time.process_time() + server_cpu_s(redis_url)
    started = time.perf_counter()
    while done < tasks:
        leases = await broker.claim([queue], limit=BATCH, lease_s=60)
        ok = []
        for lease in leases:
            if fail_once and lease.task.id not in failed:
                failed.add(lease.task.id)
                await broker.retry(lease, error="ValueError: upstream said no", delay_s=0)
            else:
                ok.append(Completion(lease=lease))
        if ok:
            await broker.complete(ok)
            done += len(ok)
    rate = tasks / (time.perf_counter() - started)
    cpu = time.process_time() + server_cpu_s(redis_url) - cpu
    return rate, cpu / tasks * 1e6


async def run(kind: str, tasks: int, redis_url: str, folder: Path) -> None:
    namespace = f"bench-history-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        broker: Broker = SqliteBroker.from_url(f"sqlite:///{folder / 'bench.db'}")
    elif kind == "redis":
        broker = RedisBroker.from_url(f"{redis_url}?namespace={namespace}")
    else:
        broker = MemoryBroker()
    try:
        server = redis_url if kind == "redis" else None
        for mode in ("success", "retry"):
            rate, cpu_us = await drain(
                broker, mode, tasks, fail_once=mode == "retry", redis_url=server
            )
            print(f"{kind:<7} {mode:<8} {rate:>8.0f} tasks/s  {cpu_us:>7.1f} µs CPU/task")
    finally:
        await broker.close()
        if kind == "redis":
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(match=f"{namespace}*", count=1000):
                client.delete(key)
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--brokers", default="sqlite,redis,memory")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    print(f"conveyor from {Path(conveyor.__file__).parent}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.brokers.split(","):
            asyncio.run(run(kind, args.tasks, args.redis_url, Path(tmp) / kind))


if __name__ == "__main__":
    main()
