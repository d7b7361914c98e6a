"""The peer: a saq worker running the same no-op (one Redis INCR via redis-py).

Run by ``bench/run.py`` as ``python -m bench.saq_worker URL QUEUE COUNTER_KEY CONCURRENCY``;
prints ``READY <pid>`` on stdout once its startup hook ran, then works until SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import redis.asyncio as aioredis
from saq import Queue, Worker


async def main(url: str, queue_name: str, counter_key: str, concurrency: int) -> None:
    counter = aioredis.Redis.from_url(url, max_connections=4096)  # as bench/tasks.py

    async def noop(ctx: dict[str, Any]) -> None:
        await counter.incr(counter_key)

    async def startup(ctx: dict[str, Any]) -> None:
        print(f"READY {os.getpid()}", flush=True)

    queue = Queue.from_url(url, name=queue_name)
    worker = Worker(queue, functions=[("noop", noop)], concurrency=concurrency, startup=startup)
    await worker.start()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)  # saq logs every job at INFO
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
