"""Workflow throughput: a 1,000-member chord and a 100-step chain, end to end, in tasks/s.

Run from the repository root::

    .venv/bin/python bench/workflows.py                         # SQLite and Redis
    .venv/bin/python bench/workflows.py --brokers redis --members 200 --steps 20
    .venv/bin/python bench/workflows.py --celery-python /tmp/celery-venv/bin/python
    .venv/bin/python bench/workflows.py --brokers redis --canvases chain   # the chain only
    .venv/bin/python bench/workflows.py --brokers redis --canvases chord --repeat 5

Each broker gets fresh real worker processes (``python -m conveyor worker
bench.workflow_tasks:app``); a canvas is timed from ``enqueue_workflow`` to its result
(``client.wait``). Also timed: the same number of plain tasks run one after another (enqueue one
with a retention, wait for its result, enqueue the next), so the chain's figure shows what a
chain step costs over a plain task. Beside each rate, the worker processes' CPU time per task
(user + system, read from /proc on Linux) over that canvas: steadier than the rate on a busy
machine. With ``--repeat N`` each canvas runs N times with the same workers, and the median
rate and CPU are printed with the range of the rates. The workers import conveyor from this
checkout's ``src``.

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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def _workers_cpu_s() -> float:
    """User + system CPU seconds used so far by the worker processes (0 where /proc is not)."""
    total = 0
    for proc in _children:
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.0


Figures = dict[str, list[tuple[float, float]]]
"""Per canvas, per run: (tasks/s, the workers' CPU ms per task)."""


async def _conveyor_run(
    url: str, members: int, steps: int, canvases: set[str], repeat: int
) -> Figures:
    from bench.workflow_tasks import add, total

    client = AsyncClient(url)
    figures: Figures = {}

    def record(name: str, tasks: int, start: float, cpu: float) -> None:
        spent = _workers_cpu_s() - cpu
        rate = tasks / (time.perf_counter() - start)
        figures.setdefault(name, []).append((rate, spent * 1000 / tasks))

    try:
        await client.wait(await client.enqueue(add.task(0, 0), retention=60), 60)  # warm up
        for _ in range(repeat if "chord" in canvases else 0):
            start, cpu = time.perf_counter(), _workers_cpu_s()
            info = await client.enqueue_workflow(
                chord([add.s(i, 1) for i in range(members)], total.s())
            )
            assert await client.wait(info, 600) == sum(range(1, members + 1))
            record("chord", members + 1, start, cpu)
        for _ in range(repeat if "chain" in canvases else 0):
            start, cpu = time.perf_counter(), _workers_cpu_s()
            flow = chain(add.s(0, 1), *[add.s(1) for _ in range(steps - 1)])
            assert await client.wait(await client.enqueue_workflow(flow), 600) == steps
            record("chain", steps, start, cpu)
        for _ in range(repeat if "plain" in canvases else 0):
            start, cpu = time.perf_counter(), _workers_cpu_s()
            value = 0
            for _ in range(steps):
                task = await client.enqueue(add.task(value, 1), retention=60)
                value = await client.wait(task, 60)
            assert value == steps
            record("plain sequential", steps, start, cpu)
        return figures
    finally:
        await client.close()


def conveyor_bench(url: str, args: argparse.Namespace) -> Figures:
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
        return asyncio.run(_conveyor_run(url, args.members, args.steps, canvases, args.repeat))
    finally:
        _stop_all()


def celery_bench(python: str, redis_url: str, args: argparse.Namespace) -> Figures:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_CELERY_URL": redis_url}
    celery = [
        python, "-m", "celery", "-A", "bench.celery_workflow_app", "worker", "--loglevel", "INFO",
        "--pool", "threads", "--concurrency", str(args.concurrency), "--without-gossip",
        "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    try:
        for i in range(args.workers):
            _spawn([*celery, "-n", f"bench{i}@%h"], env, "ready.")
        cpu = _workers_cpu_s()
        out = subprocess.run(
            [
                python, "-m", "bench.celery_workflow_client",
                str(args.members), str(args.steps), str(args.repeat),
            ],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200, check=True,
        )  # fmt: skip
        cpu = _workers_cpu_s() - cpu
    finally:
        _stop_all()
        client = redis.Redis.from_url(redis_url)
        for pattern in ("celery*", "_kombu*", "unacked*", "chord-unlock*", "bench*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        client.close()
    seconds: dict[str, list[float]] = {}
    for line in out.stdout.splitlines():
        if line.strip():
            name, value = line.split()
            seconds.setdefault(name, []).append(float(value))
    per_task = cpu * 1000 / ((args.members + 1 + args.steps) * args.repeat)
    return {  # Celery's CPU is for both canvases together, per task
        "chord": [((args.members + 1) / s, per_task) for s in seconds["chord"]],
        "chain": [(args.steps / s, per_task) for s in seconds["chain"]],
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
        "--canvases", default="chord,chain,plain", help="conveyor's canvases to time (comma list)"
    )
    parser.add_argument("--no-celery", action="store_true", help="skip the Celery peer")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each canvas (the median is printed)"
    )
    args = parser.parse_args()

    rows: list[tuple[str, str, list[tuple[float, float]]]] = []
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
    if args.no_celery:
        pass
    elif Path(args.celery_python).exists():
        figures = celery_bench(args.celery_python, args.celery_redis_url, args)
        rows += [("celery redis", name, rate) for name, rate in figures.items()]
    else:
        print(f"(no Celery at {args.celery_python}: peer skipped)")

    print(f"\n{args.members}-member chord, {args.steps}-step chain, "
          f"{args.workers} workers x {args.concurrency} slots")  # fmt: skip
    print(f"{'system':<18}{'canvas':<18}{'tasks/s':>10}{'worker CPU ms/task':>20}{'range':>14}")
    for system, name, runs in rows:
        rate = statistics.median(r for r, _ in runs)
        cpu_ms = statistics.median(c for _, c in runs)
        spread = f"{min(r for r, _ in runs):.0f}-{max(r for r, _ in runs):.0f}"
        print(f"{system:<18}{name:<18}{rate:>10.0f}{cpu_ms:>20.2f}{spread:>14}")


if __name__ == "__main__":
    try:
        main()
    finally:
        _stop_all()
