"""What flow control costs: a queue drained with a rate limit far above the load, and with a
concurrency limit, against the same queue with none.

Run from the repository root: ``python bench/limits.py [--broker URL ...] [--tasks N]``.

For each broker (default: a fresh SQLite file, and the local Redis under a namespace of its
own, deleted afterwards) and each setting, ``N`` no-op tasks are enqueued, then an in-process
``Server`` (concurrency 64) drains them; the figure is tasks per second from the first start to
the last completion, the best of five runs (the settings take turns). The settings:

- ``none``: no limit;
- ``rate``: the task type limited to 1,000,000 a second (the bucket is used, never empty);
- ``type concurrency``: the type limited to 10,000 at once (the count is kept, never binding);
- ``queue concurrency``: the queue limited to 10,000 at once.

A limit at the server's concurrency (or twice it) binds at times: a worker frees a slot when its
handler returns and claims again at once, while the broker still counts the task active until
the completion is sent (completions are batched for a few milliseconds).

The cost is each setting's rate against ``none`` (target: within 10 %). Runs are noisy on a
shared machine: compare figures from one run of the script.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from conveyor import ServeMux, Server, Task, TaskContext
from conveyor.brokers import open_broker
from conveyor.brokers.limits import FlowControl, Rate
from conveyor.brokers.protocol import Broker
from conveyor.message import TaskMessage, encode_json, new_task_id

CONCURRENCY = 64
LIMIT = 10_000
ROUNDS = 5
SETTINGS = ("none", "rate", "type concurrency", "queue concurrency")


async def _limit(broker: Broker, setting: str, queue: str) -> None:
    assert isinstance(broker, FlowControl)
    if setting == "rate":
        await broker.set_rate_limit("bench:noop", Rate(1_000_000, 1.0))
    elif setting == "type concurrency":
        await broker.set_task_concurrency("bench:noop", LIMIT)
    elif setting == "queue concurrency":
        await broker.set_queue_concurrency(queue, LIMIT)


async def drain(url: str, setting: str, tasks: int) -> float:
    """Tasks per second for one drain of ``tasks`` no-ops under ``setting``."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
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
        await _limit(broker, setting, queue)
        payload = encode_json(None)
        for start in range(0, tasks, 1000):
            batch = min(1000, tasks - start)
            await broker.enqueue(
                [
                    TaskMessage(
                        id=str(new_task_id()), type="bench:noop", queue=queue, payload=payload
                    )
                    for _ in range(batch)
                ]
            )
        server = Server(broker, queues=[queue], concurrency=CONCURRENCY)
        serving = asyncio.create_task(server.serve(mux))
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - first
        await server.shutdown()
        await serving
        await broker.delete_queue(queue, force=True)
        return tasks / elapsed
    finally:
        await broker.close()


async def bench(url: str, tasks: int) -> None:
    figures = dict.fromkeys(SETTINGS, 0.0)
    for _ in range(ROUNDS):  # settings interleaved, so a change in the machine's load hits all
        for setting in SETTINGS:
            figures[setting] = max(figures[setting], await drain(url, setting, tasks))
    base = figures["none"]
    for setting, rate in figures.items():
        print(f"  {setting:<18} {rate:9,.0f} tasks/s  {100 * (rate / base - 1):+6.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--broker", action="append", help="broker URL (repeatable)")
    parser.add_argument("--tasks", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = args.broker or [
            f"sqlite:///{Path(tmp) / 'bench.db'}",
            f"redis://127.0.0.1:6379/9?namespace=bench-limits-{uuid.uuid4().hex[:8]}",
        ]
        for url in urls:
            print(url.split("?")[0])
            asyncio.run(bench(url, args.tasks))


if __name__ == "__main__":
    main()
