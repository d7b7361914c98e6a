"""Worker subprocesses for the process tests: start, wait until ready, kill, read traces."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from support import wait_until

HERE = Path(__file__).parent


def stop_leftovers() -> None:
    """Kill every worker process still running: a test that failed halfway may leave some."""
    while _started:
        _started.pop().stop()


class Worker:
    """One worker subprocess whose stderr is collected line by line on a thread."""

    def __init__(
        self,
        url: str,
        trace_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        target: str = "worker_app:app",
    ) -> None:
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        env["CONVEYOR_TEST_DIR"] = str(trace_dir)
        env.pop("CONVEYOR_BROKER_URL", None)
        command = [sys.executable, "-m", "conveyor", "worker", target, "--broker", url]
        self.proc = subprocess.Popen(
            [*command, *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _started.append(self)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("worker exited early:\n" + "".join(self.lines))
            return any("conveyor worker ready" in line for line in self.lines)

        wait_until(ready, within=20.0)
        assert f"pid {self.pid}" in "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def spawn(
    workers: list[Worker],
    url: str,
    trace_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    target: str = "worker_app:app",
) -> Worker:
    worker = Worker(url, trace_dir, *args, env=env, target=target)
    workers.append(worker)
    worker.wait_ready()
    return worker


def traces(trace_dir: Path, prefix: str) -> list[Path]:
    return sorted(trace_dir.glob(prefix + "*"))


def events(trace_dir: Path) -> list[tuple[str, str, int, int]]:
    """Every logged line as (kind, task id, attempt, pid); a line cut by a kill is skipped."""
    found = []
    for path in trace_dir.glob("events-*.txt"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                found.append((parts[0], parts[1], int(parts[2]), int(parts[3])))
    return found


_started: list[Worker] = []  # every Worker made, until stop_leftovers (after each test)
