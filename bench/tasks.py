"""The bench's conveyor tasks: served by ``python -m conveyor worker bench.tasks:app``.

Configured by environment variables the driver (``bench/run.py``) sets for each worker:

- ``BENCH_COUNTER_URL`` / ``BENCH_COUNTER_KEY``: when set, the no-op does one Redis ``INCR``
  on that key through a plain redis-py client (the reference Redis no-op); otherwise it does
  nothing (the SQLite no-op).
- ``BENCH_LATENCY_FILE``: where ``stamp`` appends start-minus-enqueue, in seconds.
"""

from __future__ import annotations

import os
import time

import redis.asyncio as aioredis

from conveyor import App

app = App(os.environ.get("BENCH_BROKER_URL", "sqlite:///bench.db"))

_COUNTER_URL = os.environ.get("BENCH_COUNTER_URL")
_COUNTER_KEY = os.environ.get("BENCH_COUNTER_KEY", "")
_LATENCY_FILE = os.environ.get("BENCH_LATENCY_FILE", "")
# Enough connections for any --concurrency: the pool default would fail tasks above ~100.
_counter = aioredis.Redis.from_url(_COUNTER_URL, max_connections=4096) if _COUNTER_URL else None


@app.task(name="bench.noop")
async def noop() -> None:
    """The no-op: one INCR on Redis, nothing on SQLite."""
    if _counter is not None:
        await _counter.incr(_COUNTER_KEY)


@app.task(name="bench.stamp")
async def stamp(sent: float) -> None:
    """Record how long after its enqueue (``sent``, wall clock) this task started."""
    started = time.time()
    with open(_LATENCY_FILE, "a", encoding="ascii") as out:
        out.write(f"{started - sent:.6f}\n")
