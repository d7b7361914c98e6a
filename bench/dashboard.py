"""The dashboard's page latency with a big queue: overview and queue pages, p50/p95/max.

Run from the repository root: ``python bench/dashboard.py [--tasks N] [--requests N]
[--broker sqlite|redis|both] [--redis-url URL]``.

It stores ``--tasks`` pending tasks (default 100,000, 1,000 per enqueue call) plus a few in
every other state in one queue, on a fresh SQLite file and/or a fresh Redis namespace (deleted
afterwards, never FLUSHDB), then serves the dashboard with uvicorn on loopback and times
``--requests`` GETs (default 200) of each page with one keep-alive client: the overview (every
queue's counts and the last hour's chart), the queue's first page of pending tasks, a page deep
in the queue (offset 50,000), the same pages' JSON, and one task page.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import uvicorn

from conveyor.brokers import open_broker
from conveyor.message import Completion, TaskMessage, encode_json, new_task_id
from conveyor.web import create_app

QUEUE = "big"
BATCH = 1_000


def message(i: int, **fields: object) -> TaskMessage:
    payload = encode_json({"user_id": i, "email": f"user{i}@example.com"})
    return TaskMessage(
        id=str(new_task_id()), type="email:send", queue=QUEUE, payload=payload, **fields
    )  # type: ignore[arg-type]


async def fill(url: str, tasks: int) -> str:
    """Store the tasks; return the id of one archived task (for the task page)."""
    broker = open_broker(url)
    try:
        await broker.enqueue([message(i, max_retry=0, retention_s=3600) for i in range(20)])
        leases = await broker.claim([QUEUE], limit=20, lease_s=3600)
        await broker.complete([Completion(lease=lease) for lease in leases[:10]])
        for lease in leases[10:15]:
            await broker.archive(lease, error="RuntimeError: boom")
        archived = leases[10].task.id
        await broker.enqueue([message(i, process_in_s=3600) for i in range(20)])
        for start in range(0, tasks, BATCH):
            await broker.enqueue([message(i) for i in range(start, min(start + BATCH, tasks))])
        return archived
    finally:
        await broker.close()


def serve(url: str) -> tuple[uvicorn.Server, threading.Thread, int]:
    config = uvicorn.Config(create_app(url), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, port


def timings(client: httpx.Client, path: str, requests: int) -> list[float]:
    client.get(path).raise_for_status()  # warm up: the broker connection, templates
    found = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(path)
        found.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return found


def report(name: str, ms: list[float]) -> None:
    ms.sort()
    p95 = ms[max(0, round(len(ms) * 0.95) - 1)]
    p50 = statistics.median(ms)
    print(f"  {name:<34} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   max {ms[-1]:7.1f} ms")


def run(kind: str, url: str, tasks: int, requests: int) -> None:
    started = time.perf_counter()
    archived = asyncio.run(fill(url, tasks))
    print(f"{kind}: {tasks:,} pending tasks stored in {time.perf_counter() - started:.1f} s")
    server, thread, port = serve(url)
    try:
        deep = tasks // 2 // 20
        pages = {
            "overview /": "/",
            "queue, pending page 1": f"/queues/{QUEUE}?state=pending",
            f"queue, pending page {deep:,}": f"/queues/{QUEUE}?state=pending&page={deep}",
            "api/queues": "/api/queues",
            "api tasks, page 1": f"/api/queues/{QUEUE}/tasks?state=pending",
            "task page": f"/queues/{QUEUE}/tasks/{archived}",
        }
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for name, path in pages.items():
                report(name, timings(client, path, requests))
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--broker", choices=["sqlite", "redis", "both"], default="both")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    if args.broker in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            run("sqlite", f"sqlite:///{Path(folder) / 'bench.db'}", args.tasks, args.requests)
    if args.broker in ("redis", "both"):
        namespace = f"conveyor-bench-{uuid.uuid4().hex[:8]}"
        try:
            run("redis", f"{args.redis_url}?namespace={namespace}", args.tasks, args.requests)
        finally:
            import redis

            admin = redis.Redis.from_url(args.redis_url)
            keys = list(admin.scan_iter(match=f"{namespace}:*", count=1000))
            for start in range(0, len(keys), 1000):
                admin.delete(*keys[start : start + 1000])
            admin.close()


if __name__ == "__main__":
    main()
