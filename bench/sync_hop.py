"""CPU per hop of a trivial sync handler to a pool thread and back, awaited from an event loop.

Run from the repository root: ``python bench/sync_hop.py [--hops N] [--slots K] [--rounds R]``.

``K`` coroutines (a worker's slots) each await ``N / K`` calls of a trivial function, wrapped in
``contextvars.copy_context().run`` as the worker wraps a sync handler; the process's CPU time
(``time.process_time``: the loop and every thread) divided by ``N`` is the cost of one hop.
Measured twice, interleaved over ``R`` rounds: through conveyor's ``HandlerThreadPool.run`` and,
for scale, through ``loop.run_in_executor`` on a ``ThreadPoolExecutor`` of ``K`` threads (the
``concurrent.futures.Future`` plus ``asyncio.wrap_future`` path). CPU time, not wall time, so a
busy machine shifts the figures less; the median of the rounds is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from conveyor.worker.pool import HandlerThreadPool


def trivial(ctx: object, n: int) -> int:
    """The handler: returns its argument."""
    return n


async def _drive(hop: Callable[[int], Awaitable[int]], hops: int, slots: int) -> float:
    """CPU µs per hop over ``hops`` hops from ``slots`` concurrent coroutines."""

    async def slot(count: int) -> None:
        for n in range(count):
            await hop(n)

    start = time.process_time()
    await asyncio.gather(*(slot(hops // slots) for _ in range(slots)))
    return (time.process_time() - start) / hops * 1e6


async def conveyor_pool(hops: int, slots: int) -> float:
    """Through ``HandlerThreadPool.run``."""
    pool = HandlerThreadPool(slots)

    def hop(n: int) -> Awaitable[int]:
        return pool.run(contextvars.copy_context().run, trivial, None, n)

    try:
        await _drive(hop, slots * 100, slots)  # warm up: every thread started
        return await _drive(hop, hops, slots)
    finally:
        pool.shutdown()


async def executor(hops: int, slots: int) -> float:
    """Through ``loop.run_in_executor`` on a ``ThreadPoolExecutor``."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(slots) as threads:

        def hop(n: int) -> Awaitable[int]:
            return loop.run_in_executor(threads, contextvars.copy_context().run, trivial, None, n)

        await _drive(hop, slots * 100, slots)
        return await _drive(hop, hops, slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hops", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    paths = {"HandlerThreadPool.run": conveyor_pool, "run_in_executor": executor}
    figures: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, path in paths.items():
            figures[name].append(asyncio.run(path(args.hops, args.slots)))
    print(f"{args.hops} hops from {args.slots} slots, median of {args.rounds} rounds")
    for name, values in figures.items():
        print(
            f"  {name:<24}{statistics.median(values):8.2f} CPU µs/hop"
            f"  (min {min(values):.2f}, max {max(values):.2f})"
        )


if __name__ == "__main__":
    main()
