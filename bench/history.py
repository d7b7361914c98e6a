"""What the attempt history costs a drain: tasks claimed and settled straight on a broker.

Run from the repository root, once per code tree to compare (alternate the runs: the machine's
load drifts)::

    .venv/bin/python bench/history.py [--tasks 5000] [--brokers sqlite,redis,memory]
    PYTHONPATH=<other tree>/src .venv/bin/python bench/history.py

Two drains per broker, in one process, no worker: ``success`` (every task completes on its first
attempt: the history must cost nothing) and ``retry`` (every task fails once, then completes:
one record written per task). Claims and settlements go in batches of 100, as a busy worker's
do. Prints tasks per second for each; Redis keys live under a fresh namespace, deleted after.
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


async def drain(broker: Broker, queue: str, tasks: int, *, fail_once: bool) -> float:
    """Enqueue ``tasks``, then claim and settle them all; return tasks per second."""
    messages = [TaskMessage(id=uuid.uuid4().hex, type="t", queue=queue) for _ in range(tasks)]
    for i in range(0, tasks, 1000):
        await broker.enqueue(messages[i : i + 1000])
    failed: set[str] = set()
    done = 0
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
    return tasks / (time.perf_counter() - started)


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
        rates = {}
        for mode in ("success", "retry"):
            rates[mode] = await drain(broker, mode, tasks, fail_once=mode == "retry")
        print(
            f"{kind:<7} success {rates['success']:>8.0f} tasks/s   "
            f"retry-once {rates['retry']:>8.0f} tasks/s"
        )
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
