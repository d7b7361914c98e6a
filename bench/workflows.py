"""Workflow throughput: a 1,000-member chord and a 100-step chain, end to end, in tasks/s.

Run from the repository root::

    .venv/bin/python bench/workflows.py                         # SQLite and Redis
    .venv/bin/python bench/workflows.py --brokers redis --members 200 --steps 20
    .venv/bin/python bench/workflows.py --canvases chord --celery-python none   # chords only
    .venv/bin/python bench/workflows.py --celery-python /tmp/celery-venv/bin/python

Each broker gets fresh real worker processes (``python -m conveyor worker
bench.workflow_tasks:app``); a canvas is timed from ``enqueue_workflow`` to its result
(``client.wait``). Also timed: the same number of plain tasks run one after another (enqueue one
with a retention, wait for its result, enqueue the next), so the chain's figure shows what a
chain step costs over a plain task.

With ``--celery-python`` (a Python with ``celery[redis]`` installed; by default
``/tmp/celery-bench-venv/bin/python`` when it exists), Celery's chord and chain run on the same
Redis, as broker and result backend, with as many worker processes and slots, in the same run.
Redis keys live under a unique namespace (conveyor) or are deleted by pattern after the run
(Celery, in its own database number); never FLUSHDB. Every subprocess is killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from conveyor import AsyncClient, chain, chord  # noqa: E402

_children: list[subprocess.Popen[str]] = []


def _spawn(command: list[str], env: dict[str, str], ready: str | None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _children.append(proc)
    seen = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if ready is None or ready in line:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    if ready is not None and not seen.wait(60):
        raise RuntimeError(f"{command[:4]} never printed {ready!r}")
    return proc


def _stop_all() -> None:
    for proc in _children:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _children.clear()


def _drop_namespace(url: str, namespace: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


async def _conveyor_run(url: str, members: int, steps: int, canvases: set[str]) -> dict[str, float]:
    from bench.workflow_tasks import add, total

    client = AsyncClient(url)
    try:
        await client.wait(await client.enqueue(add.task(0, 0), retention=60), 60)  # warm up
        figures: dict[str, float] = {}
        if "chord" in canvases:
            start = time.perf_counter()
            info = await client.enqueue_workflow(
                chord([add.s(i, 1) for i in range(members)], total.s())
            )
            assert await client.wait(info, 600) == sum(range(1, members + 1))
            figures["chord"] = (members + 1) / (time.perf_counter() - start)
        if "chain" in canvases:
            start = time.perf_counter()
            flow = chain(add.s(0, 1), *[add.s(1) for _ in range(steps - 1)])
            assert await client.wait(await client.enqueue_workflow(flow), 600) == steps
            figures["chain"] = steps / (time.perf_counter() - start)
        if "plain" in canvases:
            start = time.perf_counter()
            value = 0
            for _ in range(steps):
                value = await client.wait(
                    await client.enqueue(add.task(value, 1), retention=60), 60
                )
            assert value == steps
            figures["plain sequential"] = steps / (time.perf_counter() - start)
        return figures
    finally:
        await client.close()


def conveyor_bench(url: str, args: argparse.Namespace) -> dict[str, float]:
    # The conveyor of this checkout (its src/), whatever is installed in the environment.
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env = {**os.environ, "PYTHONPATH": path, "BENCH_BROKER_URL": url}
    command = [
        sys.executable, "-m", "conveyor", "worker", "bench.workflow_tasks:app",
        "--broker", url, "--concurrency", str(args.concurrency),
    ]  # fmt: skip
    try:
        for _ in range(args.workers):
            _spawn(command, env, "conveyor worker ready")
        canvases = set(args.canvases.split(","))
        return asyncio.run(_conveyor_run(url, args.members, args.steps, canvases))
    finally:
        _stop_all()


def celery_bench(python: str, redis_url: str, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_CELERY_URL": redis_url}
    celery = [
        python, "-m", "celery", "-A", "bench.celery_workflow_app", "worker", "--loglevel", "INFO",
        "--pool", "threads", "--concurrency", str(args.concurrency), "--without-gossip",
        "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    try:
        for i in range(args.workers):
            _spawn([*celery, "-n", f"bench{i}@%h"], env, "ready.")
        out = subprocess.run(
            [python, "-m", "bench.celery_workflow_client", str(args.members), str(args.steps)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200, check=True,
        )  # fmt: skip
    finally:
        _stop_all()
        client = redis.Redis.from_url(redis_url)
        for pattern in ("celery*", "_kombu*", "unacked*", "chord-unlock*", "bench*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        client.close()
    seconds = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    return {
        "chord": (args.members + 1) / float(seconds["chord"]),
        "chain": args.steps / float(seconds["chain"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", default="sqlite,redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--celery-redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--celery-python", default="/tmp/celery-bench-venv/bin/python")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--canvases", default="chord,chain,plain", help="conveyor's, of chord,chain,plain"
    )
    args = parser.parse_args()

    rows: list[tuple[str, str, float]] = []
    for kind in args.brokers.split(","):
        if kind == "sqlite":
            folder = tempfile.mkdtemp(prefix="conveyor-wf-bench-")
            url = f"sqlite:///{folder}/bench.db"
        else:
            url = f"{args.redis_url}?namespace=conveyor-bench-{uuid.uuid4().hex[:10]}"
        figures = conveyor_bench(url, args)
        if kind == "redis":
            _drop_namespace(args.redis_url, url.rsplit("=", 1)[1])
        rows += [(f"conveyor {kind}", name, rate) for name, rate in figures.items()]
    if Path(args.celery_python).exists():
        figures = celery_bench(args.celery_python, args.celery_redis_url, args)
        rows += [("celery redis", name, rate) for name, rate in figures.items()]
    else:
        print(f"(no Celery at {args.celery_python}: peer skipped)")

    print(f"\n{args.members}-member chord, {args.steps}-step chain, "
          f"{args.workers} workers x {args.concurrency} slots")  # fmt: skip
    print(f"{'system':<18}{'canvas':<18}{'tasks/s':>10}")
    for system, name, rate in rows:
        print(f"{system:<18}{name:<18}{rate:>10.0f}")


if __name__ == "__main__":
    try:
        main()
    finally:
        _stop_all()
