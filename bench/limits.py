"""What flow control costs: a queue drained with a rate limit far above the load, and with a
concurrency limit, against the same queue with none.

Run from the repository root: ``python bench/limits.py [--broker URL ...] [--tasks N]``.

For each broker (default: a fresh SQLite file, and the local Redis under a namespace of its
own; each drain's queue is deleted afterwards) and each setting, ``N`` no-op tasks are
enqueued, then an in-process ``Server`` (concurrency 64) drains them. Printed per setting:
tasks per second from the first start to the last completion, the best of the rounds (the
settings take turns, each round starting one setting later); the CPU time per task of this
process (the server, the broker client, SQLite's work) plus the Redis server's (``INFO cpu``:
server-wide, so give a Redis nothing else uses), the least of the rounds; and the median over
the rounds of each round's CPU against that round's ``none``. Each drain has a queue and a task
type of its own, its limit removed afterwards.

The settings:

- ``none``: no limit;
- ``rate``: the task type limited to 1,000,000 a second (the bucket is used, never empty);
- ``type concurrency``: the type limited to 10,000 at once (the count is kept, never binding);
- ``queue concurrency``: the queue limited to 10,000 at once.

A limit at the server's concurrency (or twice it) binds at times: a worker frees a slot when its
handler returns and claims again at once, while the broker still counts the task active until
the completion is sent (completions are batched for a few milliseconds).

The cost is each setting's figures against ``none`` (target: within 10 %). The rate is noisy on a
shared machine (another process taking a core shows as a cost); the CPU time per task much less
so: compare figures from one run of the script.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

from conveyor import ServeMux, Server, Task, TaskContext
from conveyor.brokers import open_broker
from conveyor.brokers.limits import FlowControl, Rate
from conveyor.brokers.protocol import Broker
from conveyor.message import TaskMessage, encode_json, new_task_id

CONCURRENCY = 64
LIMIT = 10_000
ROUNDS = 5
SETTINGS = ("none", "rate", "type concurrency", "queue concurrency")


async def _limit(broker: Broker, setting: str, queue: str, task_type: str, on: bool) -> None:
    """Set (``on``) or remove the limit of ``setting`` on the drain's own queue and type."""
    assert isinstance(broker, FlowControl)
    if setting == "rate":
        await broker.set_rate_limit(task_type, Rate(1_000_000, 1.0) if on else None)
    elif setting == "type concurrency":
        await broker.set_task_concurrency(task_type, LIMIT if on else None)
    elif setting == "queue concurrency":
        await broker.set_queue_concurrency(queue, LIMIT if on else None)


@dataclass(frozen=True)
class Drain:
    """One drain's figures."""

    rate: float  # tasks per second
    cpu_us: float  # this process's CPU time per task (server, broker client, SQLite thread)
    redis_us: float  # the Redis server's CPU time per task (0 for SQLite)


def redis_cpu(url: str) -> float:
    """The Redis server's CPU seconds so far (0 for another broker)."""
    if not url.startswith(("redis://", "rediss://")):
        return 0.0
    client = redis.Redis.from_url(url.split("?")[0])
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def drain(url: str, setting: str, tasks: int) -> Drain:
    """The figures of one drain of ``tasks`` no-ops under ``setting``."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    task_type = f"bench:{queue}"  # a type of its own: a limit never outlives its drain
    broker = open_broker(url)
    done = asyncio.Event()
    count = 0
    first = 0.0

    async def noop(ctx: TaskContext, task: Task) -> None:
        nonlocal count, first
        if count == 0:
            first = time.perf_counter()
        count += 1
        if count == tasks:
            done.set()

    mux = ServeMux()
    mux.handle("bench:", noop)
    try:
        await _limit(broker, setting, queue, task_type, on=True)
        payload = encode_json(None)
        for start in range(0, tasks, 1000):
            batch = min(1000, tasks - start)
            await broker.enqueue(
                [
                    TaskMessage(id=str(new_task_id()), type=task_type, queue=queue, payload=payload)
                    for _ in range(batch)
                ]
            )
        server = Server(broker, queues=[queue], concurrency=CONCURRENCY)
        cpu, server_cpu = time.process_time(), redis_cpu(url)
        serving = asyncio.create_task(server.serve(mux))
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - first
        cpu, server_cpu = time.process_time() - cpu, redis_cpu(url) - server_cpu
        await server.shutdown()
        await serving
        await _limit(broker, setting, queue, task_type, on=False)
        await broker.delete_queue(queue, force=True)
        return Drain(tasks / elapsed, cpu * 1e6 / tasks, server_cpu * 1e6 / tasks)
    finally:
        await broker.close()


async def bench(url: str, tasks: int, rounds: int) -> None:
    runs: dict[str, list[Drain]] = {setting: [] for setting in SETTINGS}
    for r in range(rounds):  # settings interleaved, so a change in the machine's load hits all
        # Each round starts one setting later: something periodic (a WAL checkpoint every so
        # many drains) does not fall on the same setting every round.
        for setting in SETTINGS[r % len(SETTINGS) :] + SETTINGS[: r % len(SETTINGS)]:
            runs[setting].append(await drain(url, setting, tasks))
    base = runs["none"]
    base_rate = max(d.rate for d in base)
    base_cpu = min(d.cpu_us + d.redis_us for d in base)
    for setting, drains in runs.items():
        best = max(d.rate for d in drains)
        # CPU per task (this process and the Redis server), the least of the rounds: steadier
        # than the rate on a busy machine, and what bounds the rate when nothing waits.
        cpu = min(d.cpu_us for d in drains)
        server = min(d.redis_us for d in drains)
        total = min(d.cpu_us + d.redis_us for d in drains)
        # And each round's CPU against the same round's ``none``, the median of the rounds: a
        # lucky ``none`` run does not make every other setting look dearer.
        paired = statistics.median(
            (d.cpu_us + d.redis_us) / (n.cpu_us + n.redis_us)
            for d, n in zip(drains, base, strict=True)
        )
        print(
            f"  {setting:<18} {best:9,.0f} tasks/s {100 * (best / base_rate - 1):+6.1f} %"
            f"   CPU {cpu:6.1f} + {server:5.1f} µs/task {100 * (total / base_cpu - 1):+6.1f} %"
            f"   (median of rounds {100 * (paired - 1):+6.1f} %)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--broker", action="append", help="broker URL (repeatable)")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = args.broker or [
            f"sqlite:///{Path(tmp) / 'bench.db'}",
            f"redis://127.0.0.1:6379/9?namespace=bench-limits-{uuid.uuid4().hex[:8]}",
        ]
        for url in urls:
            print(url.split("?")[0])
            asyncio.run(bench(url, args.tasks, args.rounds))


if __name__ == "__main__":
    main()
