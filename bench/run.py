"""conveyor benchmarks: enqueue, drain, idle latency and worker RSS, on SQLite and Redis.

Prints one table, with the project's targets, plus a peer (saq) drain on Redis for comparison.

Run from the repository root::

    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/run.py                       # full size: 20,000 tasks
    .venv/bin/python bench/run.py --quick               # smoke run
    .venv/bin/python bench/run.py --brokers redis --redis-url redis://127.0.0.1:6379/9

Workers are real processes (``python -m conveyor worker bench.tasks:app``; the peer runs
``python -m bench.saq_worker``). A drain is timed from the moment every worker has announced
it is ready until the last task is counted; tasks the first worker finished before the others
were ready are subtracted, so the rate is over the tasks done while all workers ran. Each drain
also reports CPU per task (the workers' from /proc, the Redis server's from INFO), and on Redis
the drains run a second time with a handler that does nothing: what the queue itself costs,
apart from the no-op's own INCR. Redis keys
live under a unique namespace and are deleted at the end (never FLUSHDB); every subprocess is
killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

from conveyor import AsyncClient, Client, Inspector, Task

ROOT = Path(__file__).resolve().parent.parent
READY_MARKER = "conveyor worker ready"
BATCH = 1000
PRODUCERS = 100  # concurrent single-task producers sharing one AsyncClient
_PROCS: list[subprocess.Popen[bytes]] = []


# --------------------------------------------------------------------------- subprocesses


def _kill(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM (graceful worker shutdown), then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc in _PROCS:
        _PROCS.remove(proc)


def _kill_all() -> None:
    for proc in list(_PROCS):
        _kill(proc, grace_s=3.0)


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # runs atexit, which kills the workers


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    _PROCS.append(proc)
    return proc


def _wait_ready(procs: list[tuple[subprocess.Popen[bytes], Path]], marker: str) -> None:
    deadline = time.monotonic() + 60
    pending = list(procs)
    while pending:
        proc, log = pending[0]
        text = log.read_text(errors="replace")
        if marker in text:
            pending.pop(0)
            continue
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{text[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready within 60 s:\n{text[-2000:]}")
        time.sleep(0.01)


def _say(message: str) -> None:
    """Progress on stderr, so a long run shows where it is (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    system: str
    metric: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = True

    def met(self) -> str:
        if self.target is None:
            return ""
        ok = self.value >= self.target if self.higher_is_better else self.value <= self.target
        return "met" if ok else "MISSED"

    def cells(self) -> list[str]:
        fmt = (
            "{:,.2f}"
            if self.unit in ("ms", "MB", "x")
            else "{:,.1f}"
            if "µs" in self.unit
            else "{:,.0f}"
        )
        target = ""
        if self.target is not None:
            target = ("≥ " if self.higher_is_better else "≤ ") + fmt.format(self.target)
        return [self.system, self.metric, fmt.format(self.value), self.unit, target, self.met()]


def print_table(rows: list[Row]) -> None:
    header = ["system / broker", "metric", "result", "unit", "target", ""]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {2, 4}
    for n, line in enumerate(table):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("| " + " | ".join(cells) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


# --------------------------------------------------------------------------- measurements


def noop_tasks(n: int) -> list[Task]:
    return [Task("bench.noop", {}) for _ in range(n)]


def enqueue_single(url: str, n: int) -> float:
    with Client(url) as client:
        client.enqueue(Task("bench.warmup", {}), queue="warmup")
        tasks = noop_tasks(n)
        start = time.perf_counter()
        for task in tasks:
            client.enqueue(task)
        rate = n / (time.perf_counter() - start)
        _say(f"enqueue single: {rate:,.0f}/s")
        return rate


def enqueue_bulk(url: str, n: int) -> float:
    with Client(url) as client:
        client.enqueue(Task("bench.warmup", {}), queue="warmup")
        tasks = noop_tasks(n)
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            client.enqueue_many(tasks[i : i + BATCH])
        rate = n / (time.perf_counter() - start)
        _say(f"enqueue_many: {rate:,.0f}/s")
        return rate


def enqueue_concurrent(url: str, n: int) -> float:
    """``n`` single-task enqueues from PRODUCERS coroutines sharing one AsyncClient (a web app)."""

    async def run() -> float:
        async with AsyncClient(url) as client:
            await client.enqueue(Task("bench.warmup", {}), queue="warmup")

            async def producer(count: int) -> None:
                for _ in range(count):
                    await client.enqueue(Task("bench.noop", {}))

            shares = [n // PRODUCERS + (1 if i < n % PRODUCERS else 0) for i in range(PRODUCERS)]
            start = time.perf_counter()
            await asyncio.gather(*(producer(share) for share in shares))
            return n / (time.perf_counter() - start)

    rate = asyncio.run(run())
    _say(f"enqueue single, {PRODUCERS} concurrent producers: {rate:,.0f}/s")
    return rate


def ceilings(redis_url: str, key: str, n: int, concurrency: int) -> dict[str, float]:
    """The bench's own Redis work with no queue (bench/ceiling.py, in fresh processes).

    Also ``incr-two-processes``: two such processes doing ``n`` INCRs each at once (the sum of
    their rates), and ``ping-c-client``: redis-benchmark's PING over one connection, the
    machine's round trip without Python (absent when redis-benchmark is not installed).
    """
    cmd = [sys.executable, "-m", "bench.ceiling", redis_url, key, str(n), str(concurrency)]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    rates = {name: float(value) for name, value in (line.split() for line in out.splitlines())}
    pair = [
        subprocess.Popen([*cmd, "--incr-only"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    rates["incr-two-processes"] = sum(float(p.communicate()[0].split()[1]) for p in pair)
    ping = _redis_benchmark_ping(redis_url)
    if ping is not None:
        rates["ping-c-client"] = ping
    _say(f"ceilings: {rates}")
    return rates


def _redis_benchmark_ping(redis_url: str) -> float | None:
    """Requests/s of ``redis-benchmark -t ping -c 1`` (best of PING_INLINE and PING_MBULK)."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        return None
    url = urlsplit(redis_url)
    cmd = [
        tool, "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379), "-c", "1",
        "-n", "20000", "-t", "ping", "--csv",
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rates = [float(line.split(",")[1].strip('"')) for line in out.splitlines()[1:] if line]
    return max(rates) if rates else None


def script_micros(plain: redis.Redis) -> float:
    """Total server time spent in EVALSHA so far, in µs (INFO commandstats)."""
    stats = plain.info("commandstats").get("cmdstat_evalsha", {})
    return float(stats.get("usec", 0))


@dataclass
class Drained:
    """One drain: its rate, the workers' peak RSS and CPU per task (workers, and Redis)."""

    rate: float
    rss_mb: float
    worker_cpu_us: float
    server_cpu_us: float = float("nan")


def drain(
    start_workers: Callable[[], list[subprocess.Popen[bytes]]],
    done: Callable[[], int],
    n: int,
    poll_s: float,
    server_cpu: Callable[[], float] | None = None,
) -> Drained:
    """Start workers and time the drain of ``n`` tasks.

    CPU is counted over the same interval as the rate: the workers' from /proc, the Redis
    server's (``server_cpu``, seconds) from its INFO, which includes the no-op's own INCRs.
    """
    procs = start_workers()
    try:
        cpu0 = sum(_cpu_s(proc.pid) for proc in procs)
        server0 = server_cpu() if server_cpu else float("nan")
        t0 = time.perf_counter()
        before = done()
        deadline = t0 + max(120.0, n / 200)
        while done() < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"drain timed out: {done()} of {n} done")
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {proc.pid} exited with {proc.returncode}")
            time.sleep(poll_s)
        elapsed = time.perf_counter() - t0
        cpu = sum(_cpu_s(proc.pid) for proc in procs) - cpu0
        server = (server_cpu() if server_cpu else float("nan")) - server0
        rss = max(_rss_mb(proc.pid) for proc in procs)
        count = n - before
        result = Drained(count / elapsed, rss, 1e6 * cpu / count, 1e6 * server / count)
        _say(f"drained {count:,} tasks with {len(procs)} worker(s): {result.rate:,.0f}/s")
    finally:
        for proc in procs:
            _kill(proc)
    return result


def conveyor_workers(
    url: str, count: int, concurrency: int, env: dict[str, str], tmp: Path
) -> Callable[[], list[subprocess.Popen[bytes]]]:
    def start() -> list[subprocess.Popen[bytes]]:
        cmd = [
            sys.executable, "-m", "conveyor", "worker", "bench.tasks:app",
            "--broker", url, "-c", str(concurrency), "--log-level", "info",
        ]  # fmt: skip
        started = []
        for _ in range(count):
            log = tmp / f"worker-{uuid.uuid4().hex[:8]}.log"
            started.append((_spawn(cmd, env, log), log))
        _wait_ready(started, READY_MARKER)
        return [proc for proc, _ in started]

    return start


def latency(
    url: str, n: int, env: dict[str, str], tmp: Path, concurrency: int
) -> tuple[float, float, float]:
    """Enqueue ``n`` stamp tasks one at a time to an idle worker; return (p50, p99) in ms.

    Also the p50 of the producer's enqueue call alone: everything idles between samples, so it
    shows what waking the producer and the broker costs on this machine, before any worker.
    """
    out = tmp / f"latency-{uuid.uuid4().hex[:8]}.txt"
    out.touch()
    env = {**env, "BENCH_LATENCY_FILE": str(out)}
    procs = conveyor_workers(url, 1, concurrency, env, tmp)()
    try:
        with Client(url) as client:
            client.enqueue(Task("bench.warmup", {}), queue="warmup")
            calls = []
            for i in range(n):
                sent = time.time()
                client.enqueue(Task("bench.stamp", {"sent": sent}))
                calls.append((time.time() - sent) * 1000)
                deadline = time.monotonic() + 10
                while out.read_text().count("\n") <= i:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"latency task {i} not started within 10 s")
                    time.sleep(0.0005)
                time.sleep(0.005)  # let the worker go back to idle
    finally:
        for proc in procs:
            _kill(proc)
    samples = sorted(float(line) * 1000 for line in out.read_text().split())
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples), p99, statistics.median(calls)


# --------------------------------------------------------------------------- per broker

TARGETS = {
    "sqlite": {"single": 5_000, "bulk": 50_000, "drain1": 3_000, "p50": 5.0},
    "redis": {
        "single": 10_000,
        "bulk": 60_000,
        "drain1": 10_000,
        "drain2": 18_000,
        "p50": 1.0,
        "p99": 5.0,
        "rss": 60.0,
    },
}


def common_rows(
    name: str, single: float, concurrent: float, bulk: float, d1: Drained, d2: Drained,
    lat: tuple[float, float, float],
) -> list[Row]:  # fmt: skip
    t = TARGETS[name]
    system = f"conveyor {name}"
    return [
        Row(system, "enqueue single, 1 producer, sequential", single, "tasks/s", t.get("single")),
        Row(
            system,
            f"enqueue single, {PRODUCERS} concurrent producers",
            concurrent,
            "tasks/s",
            t.get("single"),
        ),
        Row(system, f"enqueue_many ({BATCH:,}/call)", bulk, "tasks/s", t.get("bulk")),
        Row(system, "drain, 1 worker process", d1.rate, "tasks/s", t.get("drain1")),
        Row(system, "drain, 2 worker processes", d2.rate, "tasks/s", t.get("drain2")),
        Row(system, "idle latency p50", lat[0], "ms", t.get("p50"), higher_is_better=False),
        Row(system, "idle latency p99", lat[1], "ms", t.get("p99"), higher_is_better=False),
        Row(system, "idle: the producer's enqueue call alone, p50", lat[2], "ms"),
        Row(system, "worker RSS after drain (1 proc)", d1.rss_mb, "MB", t.get("rss"), False),
        Row(system, "worker RSS after drain (2 procs, max)", d2.rss_mb, "MB", t.get("rss"), False),
        Row(system, "worker CPU per task, drain (1 proc)", d1.worker_cpu_us, "µs/task"),
        Row(system, "worker CPU per task, drain (2 procs, sum)", d2.worker_cpu_us, "µs/task"),
    ]


def processed(url: str) -> Callable[[], int]:
    """Tasks of the default queue done today, read through the inspector."""
    inspector = Inspector(url)
    atexit.register(inspector.close)
    return lambda: inspector.queue_info("default").processed_today


def bench_sqlite(args: argparse.Namespace, tmp: Path) -> list[Row]:
    def fresh() -> str:
        return f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:8]}.db'}"

    n, c = args.tasks, args.concurrency
    url1, url2 = fresh(), fresh()
    single = enqueue_single(url1, n)  # these tasks are then drained by one worker
    bulk = enqueue_bulk(url2, n)  # and these by two
    concurrent = enqueue_concurrent(fresh(), n)
    d1 = drain(conveyor_workers(url1, 1, c, {}, tmp), processed(url1), n, 0.02)
    d2 = drain(conveyor_workers(url2, 2, c, {}, tmp), processed(url2), n, 0.02)
    lat = latency(fresh(), args.latency_tasks, {}, tmp, c)
    return common_rows("sqlite", single, concurrent, bulk, d1, d2, lat)


def saq_enqueue(url: str, queue_name: str, n: int) -> None:
    from saq import Queue

    async def go() -> None:
        queue = Queue.from_url(url, name=queue_name)
        await queue.connect()
        for i in range(0, n, BATCH):
            await asyncio.gather(*(queue.enqueue("noop") for _ in range(min(BATCH, n - i))))
        await queue.disconnect()

    asyncio.run(go())


def saq_enqueue_single(url: str, queue_name: str, n: int) -> float:
    """saq's rate for ``n`` enqueues one after another (each awaited), as ``enqueue_single``."""
    from saq import Queue

    async def go() -> float:
        queue = Queue.from_url(url, name=queue_name)
        await queue.connect()
        await queue.enqueue("noop")  # connect outside the timing
        start = time.perf_counter()
        for _ in range(n):
            await queue.enqueue("noop")
        rate = n / (time.perf_counter() - start)
        await queue.disconnect()
        return rate

    return asyncio.run(go())


def saq_workers(
    url: str, queue_name: str, counter: str, count: int, concurrency: int, tmp: Path
) -> Callable[[], list[subprocess.Popen[bytes]]]:
    def start() -> list[subprocess.Popen[bytes]]:
        cmd = [sys.executable, "-m", "bench.saq_worker", url, queue_name, counter, str(concurrency)]
        started = []
        for _ in range(count):
            log = tmp / f"saq-{uuid.uuid4().hex[:8]}.log"
            started.append((_spawn(cmd, {}, log), log))
        _wait_ready(started, "READY")
        return [proc for proc, _ in started]

    return start


def bench_redis(args: argparse.Namespace, tmp: Path) -> list[Row]:
    token = "cb" + uuid.uuid4().hex[:12]  # every key this run makes contains it
    plain = redis.Redis.from_url(args.redis_url)

    @contextmanager
    def cleanup() -> Iterator[None]:
        try:
            yield
        finally:
            keys = list(plain.scan_iter(match=f"*{token}*", count=1000))
            for i in range(0, len(keys), 500):
                plain.delete(*keys[i : i + 500])

    sep = "&" if "?" in args.redis_url else "?"

    def fresh(tag: str) -> str:
        return f"{args.redis_url}{sep}namespace={token}{tag}"

    def counter(key: str) -> Callable[[], int]:
        return lambda: int(plain.get(key) or 0)

    def server_cpu() -> float:
        info = plain.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    n, c = args.tasks, args.concurrency
    rows: list[Row] = []
    with cleanup():
        url1, url2 = fresh("a"), fresh("b")
        before = script_micros(plain)
        single = enqueue_single(url1, n)
        single_us = (script_micros(plain) - before) / n
        before = script_micros(plain)
        bulk = enqueue_bulk(url2, n)
        bulk_us = (script_micros(plain) - before) / n
        concurrent = enqueue_concurrent(fresh("d"), n)
        drains = []
        for url, procs, key in ((url1, 1, f"{token}:ctr1"), (url2, 2, f"{token}:ctr2")):
            env = {"BENCH_COUNTER_URL": args.redis_url, "BENCH_COUNTER_KEY": key}
            workers = conveyor_workers(url, procs, c, env, tmp)
            drains.append(drain(workers, counter(key), n, 0.005, server_cpu))
        # The same drains with a handler that does nothing: what the queue itself costs.
        bare = []
        for tag, procs in (("e", 1), ("f", 2)):
            url = fresh(tag)
            enqueue_bulk(url, n)
            workers = conveyor_workers(url, procs, c, {}, tmp)
            bare.append(drain(workers, processed(url), n, 0.005, server_cpu))
        lat = latency(fresh("c"), args.latency_tasks, {}, tmp, c)
        rows += common_rows("redis", single, concurrent, bulk, drains[0], drains[1], lat)
        limits = ceilings(args.redis_url, f"{token}:ceiling", n, c)
        rows += [
            Row("ceiling (no queue)", "no-op's INCR alone, 1 process", limits["incr-concurrent"],
                "tasks/s"),
            Row("ceiling (no queue)", "no-op's INCR alone, 2 processes at once (sum)",
                limits["incr-two-processes"], "tasks/s"),
            Row("ceiling (no queue)", "sequential redis-py round trips", limits[
                "roundtrip-sequential"], "tasks/s"),
        ]  # fmt: skip
        if "ping-c-client" in limits:
            rows.append(Row("ceiling (no queue)", "redis-benchmark PING, 1 connection (C client)",
                            limits["ping-c-client"], "tasks/s"))  # fmt: skip
        rows += [
            Row("reference loop", f"BRPOP + INCR loop, sync (reference: {BRPOP_LOOP_REF:,})",
                limits["brpop-loop"], "tasks/s"),
            Row("reference loop", "RPOP 100 at a time, INCRs pipelined (reference: ~48,000)",
                limits["rpop-batched"], "tasks/s"),
        ]  # fmt: skip
        rows += scaled_rows(rows, limits["brpop-loop"] / BRPOP_LOOP_REF)
        rows += [
            # The machine's speed drifts: these shares compare a drain with its own run's ceiling.
            Row("where the time goes", "drain, 1 process, as a share of its INCR ceiling",
                100 * drains[0].rate / limits["incr-concurrent"], "%"),
            Row("where the time goes", "drain, 2 processes, as a share of their INCR ceiling",
                100 * drains[1].rate / limits["incr-two-processes"], "%"),
            Row("where the time goes", "enqueue single: server time in the script", single_us,
                "µs/task"),
            Row("where the time goes", "enqueue_many: server time in the script", bulk_us,
                "µs/task"),
        ]  # fmt: skip
        procs = ("1 proc", "2 procs")
        rows += [
            Row("where the time goes", f"Redis server CPU per task, drain ({p})", d.server_cpu_us,
                "µs/task") for p, d in zip(procs, drains, strict=True)
        ]  # fmt: skip
        for metric, unit, value in (
            ("drain, do-nothing handler", "tasks/s", lambda d: d.rate),
            ("worker CPU per task, all workers", "µs/task", lambda d: d.worker_cpu_us),
            ("Redis server CPU per task", "µs/task", lambda d: d.server_cpu_us),
        ):
            rows += [
                Row("the queue alone", f"{metric} ({p})", value(d), unit)
                for p, d in zip(procs, bare, strict=True)
            ]
        if not args.no_peer:
            rows += bench_peer(args, tmp, token, counter, drains, single)
    return rows


BRPOP_LOOP_REF = 9_000
"""What a plain BRPOP + INCR loop ran at on the machine the Redis targets were set on."""


def scaled_rows(rows: list[Row], factor: float) -> list[Row]:
    """The Redis targets scaled by this machine's speed at this moment (``factor``).

    ``factor`` is this run's plain BRPOP + INCR loop over the reference 9,000/s: rates must
    reach target x factor, times target / factor. RSS is not scaled.
    """
    out = [Row("targets scaled to this run", "machine speed: BRPOP loop / 9,000", factor, "x")]
    for row in rows:
        if row.system != "conveyor redis" or row.target is None or row.unit == "MB":
            continue
        target = row.target * factor if row.higher_is_better else row.target / factor
        out.append(
            Row("targets scaled to this run", row.metric, row.value, row.unit, target,
                row.higher_is_better)
        )  # fmt: skip
    return out


def bench_peer(
    args: argparse.Namespace, tmp: Path, token: str, counter: Callable[[str], Callable[[], int]],
    ours: list[Drained], single: float,
) -> list[Row]:  # fmt: skip
    n, c = args.tasks, args.concurrency
    peer_single = saq_enqueue_single(args.redis_url, f"{token}saqsingle", min(n, 5_000))
    _say(f"saq enqueue single: {peer_single:,.0f}/s")
    rows = [
        Row("saq redis (peer)", "enqueue single, 1 producer, sequential", peer_single, "tasks/s"),
        Row("conveyor/saq", "enqueue single ratio, 1 producer", single / peer_single, "x"),
    ]
    for procs in (1, 2):
        queue_name, key = f"{token}saq{procs}", f"{token}:saqctr{procs}"
        saq_enqueue(args.redis_url, queue_name, n)
        peer = drain(
            saq_workers(args.redis_url, queue_name, key, procs, c, tmp), counter(key), n, 0.005
        )
        rate, rss = peer.rate, peer.rss_mb
        label = "1 worker process" if procs == 1 else "2 worker processes"
        rows.append(Row("saq redis (peer)", f"drain, {label}", rate, "tasks/s"))
        rss_label = "1 proc" if procs == 1 else "2 procs, max"
        rows.append(Row("saq redis (peer)", f"worker RSS after drain ({rss_label})", rss, "MB"))
        ratio = ours[procs - 1].rate / rate
        rows.append(Row("conveyor/saq", f"drain ratio, {label}", ratio, "x", 2.0))
    return rows


# --------------------------------------------------------------------------- main


def machine_info(args: argparse.Namespace) -> list[str]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    lines = [
        "command: " + shlex.join([Path(sys.executable).name, *sys.argv]),
        f"machine: nproc={os.cpu_count()}, {model or platform.machine()}, {platform.platform()}",
        f"python: {platform.python_version()} ({sys.executable})",
    ]
    if "redis" in args.brokers:
        try:
            version = redis.Redis.from_url(args.redis_url).info("server")["redis_version"]
            lines.append(f"redis-server: {version} at {args.redis_url}")
        except redis.RedisError as exc:
            lines.append(f"redis-server: unreachable ({exc})")
    lines.append(
        f"tasks: {args.tasks:,} per drain, {args.latency_tasks} latency samples, "
        f"worker concurrency {args.concurrency}"
    )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per drain/enqueue run")
    parser.add_argument("--brokers", default="sqlite,redis", help="comma-separated: sqlite,redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--concurrency", type=int, default=100, help="per worker process")
    parser.add_argument("--latency-tasks", type=int, default=300)
    parser.add_argument("--no-peer", action="store_true", help="skip the saq comparison")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 tasks, 50 samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.latency_tasks = 2_000, 50
    args.brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = set(args.brokers) - {"sqlite", "redis"}
    if unknown:
        parser.error(f"unknown broker(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    atexit.register(_kill_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    for line in machine_info(args):
        print(line)
    sys.stdout.flush()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        if "sqlite" in args.brokers:
            rows += bench_sqlite(args, Path(tmp))
        if "redis" in args.brokers:
            rows += bench_redis(args, Path(tmp))
    print()
    print_table(rows)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # workers import bench.tasks from the repository root
    main()
