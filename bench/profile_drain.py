"""Profile one conveyor Redis worker process draining no-op tasks, with py-spy.

Run from the repository root (needs ``py-spy``, see bench/requirements.txt)::

    .venv/bin/python bench/profile_drain.py [--tasks 20000] [--redis-url URL]

The worker runs under ``py-spy record`` (raw collapsed stacks, idle samples excluded); when
the drain is done it is stopped with SIGTERM and the top functions are printed twice: by own
time (the leaf of each sample) and by inclusive time (anywhere in the stack).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import READY_MARKER, enqueue_bulk  # noqa: E402


def _function(frame: str) -> str:
    """``name (path/to/file.py:123)`` -> ``name (file.py)``: aggregate over lines."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarize(raw: Path, top: int) -> None:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total} samples (non-idle)")
    ours = Counter({f: n for f, n in inclusive.items() if "conveyor/" in f or "tasks.py" in f})
    threads = Counter({f: n for f, n in inclusive.items() if f.startswith("thread ")})
    for title, counter in (
        ("thread", threads),
        ("own time", own),
        ("inclusive time, conveyor frames only", ours),
    ):
        print(f"\ntop {top} by {title}:")
        for frame, count in counter.most_common(top):
            print(f"  {100 * count / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", type=Path, help="also keep py-spy's raw collapsed stacks here")
    args = parser.parse_args()
    token = "cb" + uuid.uuid4().hex[:12]
    url = f"{args.redis_url}?namespace={token}"
    key = f"{token}:ctr"
    plain = redis.Redis.from_url(args.redis_url)
    py_spy = Path(sys.executable).parent / "py-spy"
    with tempfile.TemporaryDirectory(prefix="conveyor-profile-") as tmp:
        raw, log = Path(tmp) / "drain.txt", Path(tmp) / "worker.log"
        try:
            enqueue_bulk(url, args.tasks)
            cmd = [
                str(py_spy), "record", "--nonblocking", "--threads", "--rate", "250",
                "--format", "raw", "-o", str(raw), "--",
                sys.executable, "-m", "conveyor", "worker", "bench.tasks:app", "--broker", url,
                "-c", str(args.concurrency), "--log-level", "info",
            ]  # fmt: skip
            env = {**os.environ, "BENCH_COUNTER_URL": args.redis_url, "BENCH_COUNTER_KEY": key}
            with log.open("wb") as out:
                spy = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 180
                while int(plain.get(key) or 0) < args.tasks:
                    if time.monotonic() > deadline or spy.poll() is not None:
                        raise RuntimeError(f"drain did not finish:\n{log.read_text()[-2000:]}")
                    time.sleep(0.05)
                children = subprocess.run(
                    ["pgrep", "-P", str(spy.pid)], capture_output=True, text=True, check=False
                ).stdout.split()
                for pid in children:
                    os.kill(int(pid), signal.SIGTERM)  # the worker; py-spy then writes out
                spy.wait(timeout=30)
            finally:
                if spy.poll() is None:
                    spy.kill()
                    spy.wait()
            print(f"worker log: {READY_MARKER!r} seen: {READY_MARKER in log.read_text()}")
            if args.raw:
                args.raw.write_bytes(raw.read_bytes())
            summarize(raw, args.top)
        finally:
            keys = list(plain.scan_iter(match=f"*{token}*", count=1000))
            for i in range(0, len(keys), 500):
                plain.delete(*keys[i : i + 500])


if __name__ == "__main__":
    main()
