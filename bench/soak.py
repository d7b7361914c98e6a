"""Soak run: load, kills, and leak figures, with every task counted.

Run from the repository root::

    .venv/bin/python bench/soak.py --broker redis --minutes 60
    .venv/bin/python bench/soak.py --broker redis --redis-url redis://127.0.0.1:6379/9 \\
        --rate 0.7 --kill-every 30 --report-every 60
    .venv/bin/python bench/soak.py --broker sqlite --minutes 60     # a file in a temp dir

It starts ``--workers`` (2) real worker processes (``python -m conveyor worker
bench.soak_tasks:app``, lease 3 s and recovery scan 0.5 s as in the reliability harness), measures
their drain capacity (the lower of a burst of ``--calibrate`` no-op/sleep tasks and
``--calibrate-seconds`` of the mix below produced at the burst's rate: the drain rate with a
producer beside the workers), lets the backlog drain, then a producer thread enqueues at
``--rate`` (0.7) of that capacity for ``--minutes``: 80 % no-ops, 10 % that sleep
1-10 ms, 5 % that raise on their first attempt and succeed on the retry (default backoff,
2.5-5 s), 5 % ``enqueue_in`` 1-5 s. Every ``--kill-every`` seconds one worker is SIGKILLed and
respawned. The first worker is never killed: it lives through the run, so its RSS and open fds
show a leak; the victim is chosen at random among the others (with 2 workers, always the
second).

``--cut-every SECONDS`` (Redis only; 0, the default, for none) adds network cuts: the workers and
the producer then reach Redis through the tests' fault proxy (``tests/faultproxy.py``, in this
process) with ``?socket_timeout=`` ``--cut-timeout`` (1 s), and every ``--cut-every`` seconds
the proxy either resets every connection or, on alternate cuts, goes silent for ``--blackhole``
seconds (1.5; connections that lost bytes to it stay silent until the clients' own timeouts
drop them). The Inspector that watches the backlog talks to Redis directly.

Each task logs ``s<n>``/``e<n>`` lines when an attempt starts/ends (``bench/soak_tasks.py``), so
starts and completions are counted exactly per task. Every ``--report-every`` seconds a line shows:
``enq`` tasks whose enqueue returned, ``done`` distinct tasks completed, ``backlog``
pending+scheduled+retry+active (Inspector), ``arch`` archived, ``dup`` tasks completed more than
once, ``rerun`` extra starts (beyond the fail-once tasks' planned retry), ``kills``, then per
live worker its pid, RSS (VmRSS) and open fds, and on Redis the namespace's key count and the
server's ``used_memory`` (on SQLite, the database files' size).

At the end the producer stops, the backlog drains (``--drain-timeout``), and a summary shows:
lost (enqueues that returned but never completed: must be 0), duplicates (allowed only for
tasks one of whose completions was logged by a worker we killed: those not so explained FAIL;
and no more than the tasks the recoverers report taking back from dead workers' leases, from
the worker logs), the surviving worker's RSS and fds at the end of ``--warmup`` vs at the end of
the load (RSS < +10 %; fds flat: at most +2; with cuts, the fds are sampled once the
connections have been re-made), on Redis the namespace's keys after the drain vs
after calibration (idle baseline; must not be higher), the broker's memory or file size (for
information), and the worker log lines at WARNING or above that kills and fail-once tasks do
not explain. Exit status: 1 on a lost or unexplained duplicate task, 2 on another FAIL, 0
otherwise. Redis keys live under a unique namespace and are deleted at the end (never
FLUSHDB); every subprocess is killed on exit. ``--keep-logs DIR`` keeps the worker logs (and
the SQLite database files).

The full 60-minute run is meant for a quiet machine: on a 2-CPU box the workers drain about
4,000-7,000 tasks/s, so 60 minutes at 70 % is 10-15 million tasks; the event logs in the temp dir
take about 20 bytes per task and the driver's ledger 4 bytes per task. The calibration is short and
noisy: pass ``--rate`` lower if the backlog keeps growing between reports (the load must stay
under capacity for the drain at the end to mean anything).
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from conveyor import Client, Inspector, Task

ROOT = Path(__file__).resolve().parent.parent
READY_MARKER = "conveyor worker ready"
TASK = "soak.run"
NOOP, SLEEP, FAIL, DELAYED = 0, 1, 2, 3
KIND_NAMES = {NOOP: "noop", SLEEP: "sleep", FAIL: "fail", DELAYED: "noop"}
_PROCS: list[subprocess.Popen[bytes]] = []


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- processes


def _kill_all() -> None:
    for proc in list(_PROCS):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # runs atexit, which kills the workers


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Workers:
    """The worker processes, by slot; slot 0 is the survivor (never killed)."""

    url: str
    tmp: Path
    extra_args: list[str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)  # pids we SIGKILLed
    crashed: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, rc) we did not

    def start(self, count: int) -> None:
        self.procs = [self._spawn() for _ in range(count)]
        for proc in self.procs:
            self._wait_ready(proc)

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "conveyor", "worker", "bench.soak_tasks:app",
            "--broker", self.url, *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "SOAK_DIR": str(self.tmp / "events")}
        env.pop("CONVEYOR_BROKER_URL", None)
        log = self.tmp / f"worker-{uuid.uuid4().hex[:8]}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        proc.log = log  # type: ignore[attr-defined]
        _PROCS.append(proc)
        return proc

    @staticmethod
    def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
        log: Path = proc.log  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while READY_MARKER not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {proc.pid} not ready (rc {proc.poll()}):\n{tail}")
            time.sleep(0.02)

    def kill_one(self) -> int:
        """SIGKILL a random worker other than the survivor, respawn it; return the dead pid."""
        slot = random.randrange(1, len(self.procs))
        victim = self.procs[slot]
        victim.kill()
        victim.wait(timeout=10)
        _PROCS.remove(victim)
        self.killed.add(victim.pid)
        self.procs[slot] = self._spawn()
        self._wait_ready(self.procs[slot])
        return victim.pid

    def respawn_crashed(self) -> None:
        """Replace any worker that exited without being killed by us (a finding)."""
        for slot, proc in enumerate(self.procs):
            if proc.poll() is not None:
                self.crashed.append((proc.pid, proc.returncode))
                say(f"!! worker {proc.pid} exited by itself with {proc.returncode}; respawning")
                _PROCS.remove(proc)
                self.procs[slot] = self._spawn()
                self._wait_ready(self.procs[slot])

    def survivor(self) -> int:
        return self.procs[0].pid


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """Exact per-task counts: enqueues acknowledged (producer), attempt starts and ends (logs)."""

    def __init__(self, events: Path) -> None:
        self.events = events
        self.kinds = bytearray()  # per task number, written by the producer before its enqueue
        self.acked = bytearray()  # 1 once its enqueue returned
        self.starts = bytearray()
        self.ends = bytearray()
        self.completed = 0
        self.duplicates = 0
        self.enqueue_errors = 0
        self._offsets: dict[Path, int] = {}
        self._lock = threading.Lock()

    def reserve(self, kinds: list[int]) -> int:
        """Number the next tasks; return the first number."""
        with self._lock:
            first = len(self.kinds)
            self.kinds.extend(kinds)
            self.acked.extend(bytes(len(kinds)))
            return first

    def acknowledge(self, first: int, count: int) -> None:
        self.acked[first : first + count] = b"\x01" * count

    @property
    def enqueued(self) -> int:
        return self.acked.count(1)

    def read(self) -> None:
        """Count the lines the workers appended since the last read."""
        for path in sorted(self.events.glob("events-*.txt")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as log:
                log.seek(offset)
                data = log.read()
            cut = data.rfind(b"\n") + 1
            self._offsets[path] = offset + cut
            for line in data[:cut].split():
                self._count(line[0] == ord("e"), int(line[1:]))

    def _count(self, end: bool, n: int) -> None:
        if n >= len(self.ends):
            grow = n + 1 - len(self.ends) + 4096
            self.starts.extend(bytes(grow))
            self.ends.extend(bytes(grow))
        counts = self.ends if end else self.starts
        seen = counts[n]
        counts[n] = min(255, seen + 1)
        if end and seen == 0:
            self.completed += 1
        elif end and seen == 1:
            self.duplicates += 1

    def reruns(self) -> int:
        """Attempts started beyond plan (1 per task, 2 for a fail-once task)."""
        extra = 0
        for many in re.finditer(rb"[\x02-\xff]", self.starts[: len(self.kinds)]):
            n = many.start()
            extra += self.starts[n] - (2 if self.kinds[n] == FAIL else 1)
        return extra

    def lost(self) -> list[int]:
        """Tasks whose enqueue returned and that never completed."""
        ends = self.ends + bytes(max(0, len(self.acked) - len(self.ends)))
        never = (zero.start() for zero in re.finditer(b"\x00", ends[: len(self.acked)]))
        return [n for n in never if self.acked[n]]

    def duplicate_pids(self) -> dict[int, list[int]]:
        """For each task completed more than once, the pids that logged its ends."""
        dups = {many.start() for many in re.finditer(rb"[\x02-\xff]", self.ends)}
        pids: dict[int, list[int]] = {n: [] for n in dups}
        for path in self.events.glob("events-*.txt") if dups else ():
            pid = int(path.stem.split("-")[1])
            with path.open("rb") as log:
                for line in log:
                    if line[0] == ord("e") and int(line[1:]) in pids:
                        pids[int(line[1:])].append(pid)
        return pids


# --------------------------------------------------------------------------- the producer


def pick_kind(rng: random.Random) -> int:
    r = rng.random()
    return NOOP if r < 0.80 else SLEEP if r < 0.90 else FAIL if r < 0.95 else DELAYED


def make_task(rng: random.Random, n: int, kind: int) -> Task:
    ms = rng.randint(1, 10) if kind == SLEEP else 0
    return Task(TASK, {"n": n, "kind": KIND_NAMES[kind], "ms": ms})


class Producer(threading.Thread):
    """Enqueue at ``rate`` tasks/s, in 50 ms ticks: one ``enqueue_many`` of the immediate tasks,
    then one ``enqueue_in`` per delayed task."""

    TICK = 0.05

    def __init__(self, url: str, ledger: Ledger, rate: float, seed: int) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.url, self.ledger, self.rate = url, ledger, rate
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Client(self.url) as client:
                self._loop(client)
        except BaseException as exc:  # reported by the driver
            self.error = exc

    def _loop(self, client: Client) -> None:
        start = time.monotonic()
        sent = 0
        while not self.stop_event.wait(self.TICK):
            due = min(int(self.rate * (time.monotonic() - start)) - sent, 5000)
            if due > 0:
                self._send(client, [pick_kind(self.rng) for _ in range(due)])
                sent += due

    def _send(self, client: Client, kinds: list[int]) -> None:
        now_kinds = [k for k in kinds if k != DELAYED]
        later = len(kinds) - len(now_kinds)
        first = self.ledger.reserve(now_kinds + [DELAYED] * later)
        tasks = [make_task(self.rng, first + i, k) for i, k in enumerate(now_kinds)]
        try:
            client.enqueue_many(tasks)
            self.ledger.acknowledge(first, len(tasks))
        except Exception:
            self.ledger.enqueue_errors += len(tasks)
        for n in range(first + len(tasks), first + len(kinds)):
            try:
                client.enqueue_in(self.rng.uniform(1, 5), make_task(self.rng, n, DELAYED))
                self.ledger.acknowledge(n, 1)
            except Exception:
                self.ledger.enqueue_errors += 1


def burst(url: str, ledger: Ledger, count: int, seed: int) -> float:
    """Enqueue ``count`` no-op/sleep tasks at once; return how fast the workers drain them."""
    rng = random.Random(seed)
    kinds = [SLEEP if rng.random() < 0.1 else NOOP for _ in range(count)]
    done_before = ledger.completed
    start = time.monotonic()
    with Client(url) as client:
        for i in range(0, count, 1000):
            chunk = kinds[i : i + 1000]
            first = ledger.reserve(chunk)
            client.enqueue_many([make_task(rng, first + j, k) for j, k in enumerate(chunk)])
            ledger.acknowledge(first, len(chunk))
    deadline = start + 300
    while ledger.completed - done_before < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"calibration: {ledger.completed - done_before} of {count} done")
        time.sleep(0.05)
        ledger.read()
    return count / (time.monotonic() - start)


def under_load(url: str, ledger: Ledger, rate: float, seconds: float, seed: int) -> float:
    """Produce the soak's mix at ``rate`` for ``seconds``; return the completions per second.

    With ``rate`` at or above capacity this is the drain rate while a producer runs beside the
    workers (on a small machine the producer's CPU is taken from them, which a burst misses).
    """
    producer = Producer(url, ledger, rate, seed)
    done_before, start = ledger.completed, time.monotonic()
    producer.start()
    while time.monotonic() - start < seconds:
        time.sleep(0.2)
        ledger.read()
    rate_done = (ledger.completed - done_before) / (time.monotonic() - start)
    producer.stop_event.set()
    producer.join(timeout=30)
    return rate_done


def calibrate(args: argparse.Namespace, url: str, ledger: Ledger) -> float:
    """Capacity: the lower of a burst's drain rate and the drain rate under a producer."""
    fast = burst(url, ledger, args.calibrate, args.seed)
    loaded = under_load(url, ledger, fast, args.calibrate_seconds, args.seed + 1)
    say(f"capacity: burst {fast:,.0f} tasks/s, under a producer {loaded:,.0f} tasks/s")
    return min(fast, loaded)


# --------------------------------------------------------------------------- broker figures


@dataclass
class BrokerProbe:
    """The backlog from the Inspector; the namespace's keys and memory (Redis) or file size."""

    url: str
    redis_url: str | None = None
    namespace: str = ""
    db_path: Path | None = None

    def __post_init__(self) -> None:
        self.inspector = Inspector(self.url)
        self.plain = redis.Redis.from_url(self.redis_url) if self.redis_url else None

    def backlog(self) -> tuple[int, int]:
        """(pending + scheduled + retry + active, archived) of the default queue."""
        info = self.inspector.queue_info("default")
        return info.pending + info.scheduled + info.retry + info.active, info.archived

    def keys(self) -> int:
        assert self.plain is not None
        return sum(1 for _ in self.plain.scan_iter(match=f"{self.namespace}:*", count=1000))

    def size_mb(self) -> float:
        """Redis's ``used_memory`` (whole server), or the SQLite files' size (db, WAL, shm)."""
        if self.plain is not None:
            return int(self.plain.info("memory")["used_memory"]) / 2**20
        assert self.db_path is not None
        files = self.db_path.parent.glob(self.db_path.name + "*")
        return sum(p.stat().st_size for p in files if p.is_file()) / 2**20

    def extras(self) -> str:
        if self.plain is not None:
            return f"keys {self.keys()} used_memory {self.size_mb():.1f}MB"
        return f"db {self.size_mb():.1f}MB"

    def cleanup(self) -> None:
        self.inspector.close()
        if self.plain is not None:
            keys = list(self.plain.scan_iter(match=f"*{self.namespace}*", count=1000))
            for i in range(0, len(keys), 500):
                self.plain.delete(*keys[i : i + 500])
            self.plain.close()


# --------------------------------------------------------------------------- the run


@dataclass
class Sample:
    at: float
    rss: float
    fds: int


def report(t0: float, ledger: Ledger, probe: BrokerProbe, workers: Workers, kills: int) -> None:
    backlog, archived = probe.backlog()
    procs = " ".join(
        f"w{slot}:{p.pid} {rss_mb(p.pid):.1f}MB {open_fds(p.pid)}fd"
        for slot, p in enumerate(workers.procs)
        if p.poll() is None
    )
    say(
        f"t={time.monotonic() - t0:6.0f}s enq {ledger.enqueued:,} done {ledger.completed:,} "
        f"backlog {backlog:,} arch {archived} dup {ledger.duplicates} kills {kills} | "
        f"{procs} | {probe.extras()}"
    )


def soak(
    args: argparse.Namespace, ledger: Ledger, probe: BrokerProbe, workers: Workers,
    cuts: Cuts | None,
) -> dict:  # fmt: skip
    """The loaded phase; returns what the summary needs."""
    producer = Producer(workers.url, ledger, args.target_rate, args.seed)
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_kill, next_report = t0 + args.kill_every, t0 + args.report_every
    kills, first, enq0 = 0, None, ledger.enqueued
    if cuts is not None:
        cuts.start(t0)
    producer.start()
    while (now := time.monotonic()) < end:
        time.sleep(0.2)
        ledger.read()
        workers.respawn_crashed()
        if cuts is not None:
            cuts.tick(now)
        if producer.error is not None:
            raise RuntimeError(f"producer failed: {producer.error!r}")
        if first is None and now - t0 >= args.warmup:
            pid = workers.survivor()
            first = Sample(now - t0, rss_mb(pid), open_fds(pid))
        if args.kill_every > 0 and now >= next_kill:
            workers.kill_one()
            kills += 1
            next_kill += args.kill_every
        if now >= next_report:
            report(t0, ledger, probe, workers, kills)
            next_report += args.report_every
    if cuts is not None:
        cuts.stop()
        time.sleep(3 * args.cut_timeout)  # the clients notice and reconnect before the sample
    pid = workers.survivor()
    last = Sample(time.monotonic() - t0, rss_mb(pid), open_fds(pid))
    producer.stop_event.set()
    producer.join(timeout=30)
    achieved = (ledger.enqueued - enq0) / (time.monotonic() - t0)
    report(t0, ledger, probe, workers, kills)
    return {"t0": t0, "kills": kills, "first": first, "last": last, "achieved": achieved}


def drain(args: argparse.Namespace, ledger: Ledger, probe: BrokerProbe, workers: Workers) -> float:
    """Wait until every acknowledged task completed and the backlog is empty; return seconds."""
    start = time.monotonic()
    while time.monotonic() - start < args.drain_timeout:
        ledger.read()
        workers.respawn_crashed()
        if ledger.completed >= ledger.enqueued and probe.backlog()[0] == 0:
            break
        time.sleep(0.5)
    time.sleep(1.0)  # late duplicates, and the last deletions of completed records
    ledger.read()
    return time.monotonic() - start


EXPECTED_LOG = ("fails its first attempt", "tasks whose lease expired")
LOG_LEVEL = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) +(.*)$")
RECOVERED = re.compile(r"recovered (\d+) tasks whose lease expired")


def read_logs(tmp: Path) -> tuple[int, Counter[str]]:
    """Tasks recovered by lease (the recoverers' count), and the worker log lines at WARNING or
    above that kills and fail-once tasks do not explain, by message with numbers and ids as #."""
    recovered, found = 0, Counter[str]()
    for log in tmp.glob("worker-*.log"):
        with log.open(errors="replace") as lines:
            for line in lines:
                if count := RECOVERED.search(line):
                    recovered += int(count[1])
                match = LOG_LEVEL.match(line)
                if match and not any(text in line for text in EXPECTED_LOG):
                    found[re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "#", match[2])[:160]] += 1
    return recovered, found


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summary(
    args: argparse.Namespace, ledger: Ledger, probe: BrokerProbe, workers: Workers, run: dict,
    drained_s: float, keys_baseline: int | None,
) -> int:  # fmt: skip
    """Print the summary table; return the exit status."""
    lost = ledger.lost()
    dup_pids = ledger.duplicate_pids()
    unexplained = [n for n, pids in dup_pids.items() if not set(pids) & workers.killed]
    # With cuts, a lease can lapse while its worker is cut off (a blackhole outlasting renewals):
    # the task is recovered and runs again. Such re-runs are counted by the recoverers' log,
    # which bounds all duplicates below ("tasks recovered by lease").
    by_cuts, unexplained = (unexplained, []) if run["cuts"] is not None else ([], unexplained)
    first, last, kills = run["first"], run["last"], run["kills"]
    backlog, archived = probe.backlog()
    rows: list[tuple[str, str, str]] = [
        ("load", f"{args.target_rate:,.0f}/s asked, {run['achieved']:,.0f}/s enqueued", ""),
        ("tasks enqueued (acknowledged)", f"{ledger.enqueued:,}", ""),
        ("enqueue errors (not counted)", f"{ledger.enqueue_errors:,}", ""),
        ("tasks completed (distinct)", f"{ledger.completed:,}", ""),
        ("drain after the load", f"{drained_s:.1f} s; backlog {backlog}, archived {archived}", ""),
        ("lost (acked, never completed)", f"{len(lost)}" + (f" e.g. {lost[:5]}" if lost else ""),
         verdict(not lost)),
        ("kills / crashes by themselves", f"{kills} / {len(workers.crashed)}",
         verdict(not workers.crashed)),
        *cut_rows(run["cuts"]),
        ("duplicates (completed twice+)",
         f"{len(dup_pids)}, after cuts {len(by_cuts)}, unexplained {len(unexplained)}",
         verdict(not unexplained)),
        ("re-runs (extra starts)", f"{ledger.reruns()}", ""),
    ]  # fmt: skip
    if first is not None:
        growth = 100 * (last.rss / first.rss - 1)
        rows += [
            (f"survivor RSS t={first.at:.0f}s -> t={last.at:.0f}s",
             f"{first.rss:.1f} -> {last.rss:.1f} MB ({growth:+.1f} %)", verdict(growth < 10)),
            ("survivor open fds", f"{first.fds} -> {last.fds}", verdict(last.fds <= first.fds + 2)),
        ]  # fmt: skip
    else:
        rows.append(("survivor RSS / fds", "run shorter than --warmup: not measured", "FAIL"))
    if keys_baseline is not None:
        keys = probe.keys()
        rows.append(("Redis keys: idle baseline -> after drain", f"{keys_baseline} -> {keys}",
                     verdict(keys <= keys_baseline)))  # fmt: skip
    what = "Redis used_memory" if probe.plain is not None else "SQLite files"
    rows.append((f"{what}: idle baseline -> after drain",
                 f"{run['size0']:.1f} -> {probe.size_mb():.1f} MB", ""))  # fmt: skip
    enough = verdict(ledger.enqueued >= 200_000) if args.minutes >= 60 else "n/a (short run)"
    rows.append(("tasks >= 200k (for 60 min)", f"{ledger.enqueued:,}", enough))
    recovered, findings = read_logs(workers.tmp)
    rows.append(("tasks recovered by lease (logs)", f"{recovered}: duplicates must be fewer",
                 verdict(len(dup_pids) <= recovered)))  # fmt: skip
    rows.append(("unexplained worker log warnings", f"{sum(findings.values())}", ""))
    print_rows(rows)
    for message, count in findings.most_common(10):
        print(f"    {count:6d} x {message}")
    if lost or unexplained:
        return 1
    return 2 if any(row[2] == "FAIL" for row in rows) else 0


def cut_rows(cuts: Cuts | None) -> list[tuple[str, str, str]]:
    if cuts is None:
        return []
    return [("network cuts: resets / blackholes",
             f"{cuts.resets} / {cuts.blackholes} ({cuts.seconds:g} s each)", "")]  # fmt: skip


def print_rows(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    for row in rows:
        print(("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip())


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--broker", choices=["redis", "sqlite"], default="redis")
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    p.add_argument("--rate", type=float, default=0.7, help="load, as a fraction of capacity")
    p.add_argument("--kill-every", type=float, default=30.0, help="seconds; 0: no kills")
    p.add_argument("--report-every", type=float, default=60.0, help="seconds")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=10, help="per worker")
    p.add_argument("--lease", default="3s")
    p.add_argument("--recover-interval", default="0.5s")
    p.add_argument("--calibrate", type=int, default=30_000, help="tasks in the capacity burst")
    p.add_argument("--calibrate-seconds", type=float, default=10.0, help="under a producer")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="seconds")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--cut-every", type=float, default=0.0, help="seconds; 0: no network cuts")
    p.add_argument("--blackhole", type=float, default=1.5, help="seconds a silent cut lasts")
    p.add_argument("--cut-timeout", type=float, default=1.0, help="socket_timeout with cuts")
    p.add_argument("--keep-logs", type=Path, default=None, help="keep worker logs, SQLite files")
    args = p.parse_args(argv)
    if args.workers < 2:
        p.error("--workers must be at least 2 (one survivor, one to kill)")
    if args.seed is None:
        args.seed = random.randrange(2**32)
    if args.cut_every > 0 and args.broker != "redis":
        p.error("--cut-every needs --broker redis (the fault proxy is a TCP proxy)")
    return args


@dataclass
class Cuts:
    """Network cuts between the clients (workers, producer) and Redis, through the fault proxy.

    Cuts alternate: a reset of every connection, then a blackhole of ``seconds``. A timer heals
    the blackhole, so it never outlasts ``seconds`` while the driver waits on something else
    (a respawned worker getting ready).
    """

    proxy: Any
    every: float
    seconds: float
    resets: int = 0
    blackholes: int = 0
    _next: float = 0.0

    def start(self, now: float) -> None:
        self._next = now + self.every

    def tick(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + self.every
        if self.resets <= self.blackholes:
            self.proxy.reset()
            self.resets += 1
        else:
            self.proxy.blackhole(True)
            heal = threading.Timer(self.seconds, self.proxy.blackhole, args=(False,))
            heal.daemon = True
            heal.start()
            self.blackholes += 1

    def stop(self) -> None:
        """Heal, and drop the connections a blackhole left silent (before the drain)."""
        self.proxy.blackhole(False)
        self.proxy.reset()


def proxied(args: argparse.Namespace, url: str) -> tuple[str, Cuts | None]:
    """The URL the workers and the producer use, and the cuts (None: straight to Redis)."""
    if args.cut_every <= 0:
        return url, None
    sys.path.insert(0, str(ROOT / "tests"))
    from faultproxy import FaultProxy  # the tests' proxy; only needed for cuts

    target = urlsplit(url)
    proxy = FaultProxy(target.hostname or "127.0.0.1", target.port or 6379)
    atexit.register(proxy.close)
    netloc = f"127.0.0.1:{proxy.port}"
    if "@" in target.netloc:
        netloc = target.netloc.rsplit("@", 1)[0] + "@" + netloc
    via = urlunsplit(target._replace(netloc=netloc))
    return f"{via}&socket_timeout={args.cut_timeout:g}", Cuts(proxy, args.cut_every, args.blackhole)


def broker_url(args: argparse.Namespace, tmp: Path) -> tuple[str, BrokerProbe]:
    if args.broker == "sqlite":
        path = tmp / "soak.db"
        url = f"sqlite:///{path}"
        return url, BrokerProbe(url, db_path=path)
    namespace = "soak" + uuid.uuid4().hex[:12]
    sep = "&" if "?" in args.redis_url else "?"
    url = f"{args.redis_url}{sep}namespace={namespace}"
    return url, BrokerProbe(url, redis_url=args.redis_url, namespace=namespace)


def idle_keys(probe: BrokerProbe) -> int | None:
    """The namespace's key count once the calibration burst is fully acknowledged (Redis)."""
    deadline = time.monotonic() + 30
    while probe.backlog()[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    return probe.keys() if probe.plain is not None else None


def header(args: argparse.Namespace, url: str) -> None:
    rev = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    say(f"soak: {args.broker} {url}, {args.minutes:g} min, {args.workers} workers "
        f"-c {args.concurrency}, lease {args.lease}, kill every {args.kill_every:g} s, "
        f"cut every {args.cut_every:g} s, "
        f"seed {args.seed}, nproc {os.cpu_count()}, git {rev}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(_kill_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    random.seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="conveyor-soak-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "events").mkdir()
        url, probe = broker_url(args, tmp)
        url, cuts = proxied(args, url)  # the clients' URL; the probe keeps its own
        header(args, url)
        extra = ["-c", str(args.concurrency), "--lease", args.lease,
                 "--recover-interval", args.recover_interval, "--log-level", "info"]  # fmt: skip
        workers = Workers(url, tmp, extra)
        ledger = Ledger(tmp / "events")
        try:
            workers.start(args.workers)
            args.target_rate = calibrate(args, url, ledger) * args.rate
            say(f"producing at {args.target_rate:,.0f} tasks/s")
            keys_baseline = idle_keys(probe)
            size0 = probe.size_mb()
            run = {**soak(args, ledger, probe, workers, cuts), "size0": size0, "cuts": cuts}
            drained = drain(args, ledger, probe, workers)
            return summary(args, ledger, probe, workers, run, drained, keys_baseline)
        finally:
            _kill_all()
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for kept in [*tmp.glob("worker-*.log"), *tmp.glob("soak.db*")]:
                    if kept.is_file():  # not the SQLite broker's wake-up directory
                        shutil.copy(kept, args.keep_logs / kept.name)
            probe.cleanup()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
