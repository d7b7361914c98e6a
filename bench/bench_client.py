"""Enqueue throughput of the sync Client on SQLite (and memory): single calls and enqueue_many.

Run: .venv/bin/python bench/bench_client.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from conveyor import Client, Task


def measure(url: str, n: int) -> tuple[float, float]:
    with Client(url) as client:
        client.enqueue(Task("bench.warmup"))
        start = time.perf_counter()
        for i in range(n):
            client.enqueue(Task("bench.single", {"i": i}))
        single = n / (time.perf_counter() - start)
        tasks = [Task("bench.many", {"i": i}) for i in range(n * 5)]
        start = time.perf_counter()
        for chunk in range(0, len(tasks), 1000):
            client.enqueue_many(tasks[chunk : chunk + 1000])
        many = len(tasks) / (time.perf_counter() - start)
    return single, many


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        for label, url in (
            ("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}"),
            ("memory", "memory://bench"),
        ):
            single, many = measure(url, n)
            print(f"{label:7} enqueue: {single:9,.0f}/s   enqueue_many(1000): {many:9,.0f}/s")


if __name__ == "__main__":
    main()
