"""Ceilings: what the bench's own work costs with no queue at all, on this machine.

Run by ``bench/run.py`` in a fresh process (like a worker) as
``python -m bench.ceiling URL KEY N CONCURRENCY [--incr-only]``; prints rates, in tasks/s, one
per line (``--incr-only``: the first one alone, so two processes can run it at once):

- ``incr-concurrent``: the Redis no-op's work alone, ``N`` INCRs on ``KEY`` from
  ``CONCURRENCY`` coroutines through the same redis-py asyncio client the no-op task uses, on the
  event loop a worker picks by default (uvloop when installed). No worker on one process can
  drain the INCR no-op faster than this: it is the task, not the queue.
- ``roundtrip-sequential``: ``N`` INCRs one after another on a plain (sync) redis-py client.
  A sequential producer that waits for each acknowledgement cannot enqueue faster than one
  round trip per task.
- ``brpop-loop``: the reference queue (about 9,000/s on the machine the Redis targets were set
  on): a plain sync redis-py loop that takes one item with ``BRPOP`` and does the no-op's
  ``INCR``, over a list of ``N`` items. No lease, no retry, nothing recorded: the same work with
  no queue machinery. The ratio of this figure to 9,000 says how fast this machine is at this
  moment, compared with that one.
- ``rpop-batched``: the other reference loop (about 48,000/s there): ``RPOP`` 100 items at a
  time, with their ``INCR`` commands sent in one pipeline.

The key is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio as aioredis

from conveyor.worker.loops import loop_factory


async def incr_concurrent(url: str, key: str, n: int, concurrency: int) -> float:
    client = aioredis.Redis.from_url(url, max_connections=4096)  # as bench/tasks.py
    try:
        await client.incr(key)  # connect outside the timing

        async def worker(count: int) -> None:
            for _ in range(count):
                await client.incr(key)

        shares = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
        start = time.perf_counter()
        await asyncio.gather(*(worker(share) for share in shares))
        return n / (time.perf_counter() - start)
    finally:
        await client.aclose()


def roundtrip_sequential(url: str, key: str, n: int) -> float:
    client = redis.Redis.from_url(url)
    try:
        client.incr(key)
        start = time.perf_counter()
        for _ in range(n):
            client.incr(key)
        return n / (time.perf_counter() - start)
    finally:
        client.delete(key)
        client.close()


BATCH = 100


@contextmanager
def _filled(url: str, key: str, n: int) -> Iterator[tuple[redis.Redis, str]]:
    """A client and a list of ``n`` items to take (deleted afterwards, with ``key``)."""
    client = redis.Redis.from_url(url)
    items = f"{key}:items"
    try:
        client.delete(items)
        for i in range(0, n, 10_000):
            client.lpush(items, *(b"t" for _ in range(min(10_000, n - i))))
        yield client, items
    finally:
        client.delete(key, items)
        client.close()


def brpop_loop(url: str, key: str, n: int) -> float:
    """``n`` tasks taken one at a time with BRPOP, each followed by its INCR."""
    with _filled(url, key, n) as (client, items):
        start = time.perf_counter()
        for _ in range(n):
            client.brpop([items], timeout=1)
            client.incr(key)
        return n / (time.perf_counter() - start)


def rpop_batched(url: str, key: str, n: int) -> float:
    """``n`` tasks taken ``BATCH`` at a time with RPOP, their INCRs in one pipeline per batch."""
    with _filled(url, key, n) as (client, items):
        start = time.perf_counter()
        while taken := client.rpop(items, BATCH):
            with client.pipeline(transaction=False) as pipe:
                for _ in taken:
                    pipe.incr(key)
                pipe.execute()
        return n / (time.perf_counter() - start)


def main(url: str, key: str, n: int, concurrency: int, incr_only: bool) -> None:
    # On the event loop a worker would use here (--loop auto: uvloop when installed).
    _, factory = loop_factory("auto")
    with asyncio.Runner(loop_factory=factory) as runner:
        rate = runner.run(incr_concurrent(url, key, n, concurrency))
    print(f"incr-concurrent {rate:.0f}")
    if not incr_only:
        print(f"roundtrip-sequential {roundtrip_sequential(url, key, n):.0f}")
        print(f"brpop-loop {brpop_loop(url, key, n):.0f}")
        print(f"rpop-batched {rpop_batched(url, key, n):.0f}")


if __name__ == "__main__":
    main(
        sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "--incr-only" in sys.argv[5:]
    )
