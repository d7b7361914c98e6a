"""The App the process tests run in real ``python -m conveyor worker`` subprocesses.

Handlers leave traces as files in ``$CONVEYOR_TEST_DIR`` so the test (another process) can see
what ran, where, and when: ``started-<name>-<pid>``, ``finished-<name>-<pid>`` and, for
``record``, one line per task id in ``done-<pid>.txt``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from conveyor import App, current_context

app = App("memory://unused-the-tests-pass-broker")


def _trace(kind: str, name: str) -> None:
    directory = Path(os.environ["CONVEYOR_TEST_DIR"])
    (directory / f"{kind}-{name}-{os.getpid()}").write_text(str(current_context().retry_count))


@app.task(name="proc.record")
def record(n: int) -> int:
    """Append this task's id to a per-process file (exactly-once checks)."""
    path = Path(os.environ["CONVEYOR_TEST_DIR"]) / f"done-{os.getpid()}.txt"
    with path.open("a") as out:
        out.write(current_context().task_id + "\n")
    return n


@app.task(name="proc.logged")
async def logged(n: int) -> int:
    """Log ``start``/``end`` lines (task id, attempt, pid) around a short await (fault tests)."""
    ctx = current_context()
    path = Path(os.environ["CONVEYOR_TEST_DIR"]) / f"events-{os.getpid()}.txt"
    line = f"{ctx.task_id} {ctx.retry_count} {os.getpid()}"
    with path.open("a") as out:  # one small O_APPEND write per line: lines never interleave
        out.write(f"start {line}\n")
    await asyncio.sleep(0.005)
    with path.open("a") as out:
        out.write(f"end {line}\n")
    return n


@app.task(name="proc.slow_pid")
async def slow_pid(name: str, seconds: float) -> int:
    """Signal the start, sleep, and return this worker's pid (who completed it)."""
    _trace("started", name)
    await asyncio.sleep(seconds)
    return os.getpid()


@app.task(name="proc.poison")
def poison() -> None:
    """Kill the worker that runs it, every time (a crash-poison task)."""
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="proc.hang_first_time")
async def hang_first_time(name: str) -> None:
    """Signal the start, then hang on the first attempt only (the test kills the worker)."""
    _trace("started", name)
    if current_context().retry_count == 0:
        await asyncio.sleep(60)
    _trace("finished", name)


@app.task(name="proc.sleep")
async def sleep(name: str, seconds: float) -> None:
    """Signal the start, sleep, signal the end."""
    _trace("started", name)
    await asyncio.sleep(seconds)
    _trace("finished", name)
