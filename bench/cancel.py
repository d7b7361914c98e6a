"""How long ``cancel_task`` takes to stop a running handler, on each broker.

``python -m bench.cancel [REDIS_URL] [--rounds N]`` runs a worker in this process, starts a task
that waits for ever, cancels it with the Inspector and measures until the handler sees its
``CancelledError``; repeated ``--rounds`` times (default 20) per broker (memory, a temporary
SQLite file, and Redis when a URL is given, in a namespace of its own that is deleted after).
Prints the median and the worst, in milliseconds. The worker checks for cancel requests every
half second while it runs tasks, so the figures should lie between 0 and about 500 ms
(each cancel is asked at a random moment, up to a second after its task started).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from conveyor import AsyncInspector, Server, Task, TaskContext
from conveyor.brokers import open_broker
from conveyor.message import TaskMessage


async def measure(url: str, rounds: int) -> list[float]:
    started = asyncio.Event()
    stopped: asyncio.Queue[float] = asyncio.Queue()

    async def handler(ctx: TaskContext, task: Task) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.put_nowait(time.perf_counter())
            raise

    broker = open_broker(url)
    server = Server(url, concurrency=1)
    serving = asyncio.create_task(server.serve(handler))
    figures: list[float] = []
    try:
        async with AsyncInspector(broker) as inspector:
            for _ in range(rounds):
                started.clear()
                message = TaskMessage(id=uuid.uuid4().hex, type="bench.cancel", max_retry=0)
                await broker.enqueue([message])
                await asyncio.wait_for(started.wait(), 30)
                # A random moment in the worker's check cycle: right after the previous cancel
                # was seen, every request would land just after a check (the worst case).
                await asyncio.sleep(random.uniform(0, 1))
                asked = time.perf_counter()
                await inspector.cancel_task("default", message.id)
                figures.append((await asyncio.wait_for(stopped.get(), 30) - asked) * 1000)
    finally:
        await server.shutdown()
        await serving
        await broker.close()
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("redis_url", nargs="?")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # each cancel logs a warning and an error
    with tempfile.TemporaryDirectory() as tmp:
        urls = {
            "memory": f"memory://bench-{uuid.uuid4().hex[:8]}",
            "sqlite": f"sqlite:///{Path(tmp) / 'b.db'}",
        }
        namespace = f"bench-cancel-{uuid.uuid4().hex[:8]}"
        if args.redis_url:
            joiner = "&" if "?" in args.redis_url else "?"
            urls["redis"] = f"{args.redis_url}{joiner}namespace={namespace}"
        try:
            for name, url in urls.items():
                figures = await measure(url, args.rounds)
                median, worst = statistics.median(figures), max(figures)
                print(
                    f"{name:>7}: cancel to CancelledError, median {median:6.1f} ms,"
                    f" worst {worst:6.1f} ms ({len(figures)} rounds)"
                )
        finally:
            if args.redis_url:
                import redis

                client = redis.Redis.from_url(args.redis_url)
                keys = list(client.scan_iter(match=f"{namespace}:*"))
                if keys:
                    client.delete(*keys)
                client.close()


if __name__ == "__main__":
    asyncio.run(main())
