"""The App the process tests run in real ``python -m conveyor worker`` subprocesses.

Handlers leave traces as files in ``$CONVEYOR_TEST_DIR`` so the test (another process) can see
what ran, where, and when: ``started-<name>-<pid>``, ``finished-<name>-<pid>`` and, for
``record``, one line per task id in ``done-<pid>.txt``; ``clocked`` logs JSON lines to
``clocked-<pid>.jsonl``; the steps of ``proc.pipeline`` append ``<step> <task id> <token>`` to
``steps.txt`` as they start, and return the token.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from conveyor import App, current_context, reentrant

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


_time_clients: dict[str, Any] = {}


async def _redis_time() -> float:
    """The Redis server's clock (``TIME``), untouched by libfaketime in this process."""
    import redis.asyncio as aioredis

    url = os.environ["CONVEYOR_TEST_TIME_URL"]
    client = _time_clients.get(url)
    if client is None:
        client = _time_clients[url] = aioredis.Redis.from_url(url)
    seconds, micros = await client.time()
    return seconds + micros / 1e6


@app.task(name="proc.clocked")
async def clocked(seconds: float) -> int:
    """Log a JSON ``start`` and ``end`` line (id, attempt, pid, Redis's clock) around a sleep.

    ``wall`` is this process's ``time.time()`` read just after Redis's ``TIME``: under
    libfaketime it carries the faked offset, which shows that a jump reached the worker.
    """
    ctx = current_context()
    path = Path(os.environ["CONVEYOR_TEST_DIR"]) / f"clocked-{os.getpid()}.jsonl"
    line: dict[str, Any] = {"id": ctx.task_id, "attempt": ctx.retry_count, "pid": os.getpid()}
    started = await _redis_time()
    start = json.dumps({**line, "kind": "start", "redis": started, "wall": time.time()})
    with path.open("a") as out:  # one small O_APPEND write per line: lines never interleave
        out.write(start + "\n")
    await asyncio.sleep(seconds)
    ended = await _redis_time()
    with path.open("a") as out:
        out.write(json.dumps({**line, "kind": "end", "redis": ended, "wall": time.time()}) + "\n")
    return os.getpid()


def _step_started(step: str) -> str:
    """Log the start of a step with a fresh token, which the step returns in its dict: the
    token stored in the result shows which start's output the pipeline kept."""
    token = uuid.uuid4().hex
    path = Path(os.environ["CONVEYOR_TEST_DIR"]) / "steps.txt"
    with path.open("a") as out:  # O_APPEND, one small write: the file's order is the run order
        out.write(f"{step} {current_context().task_id} {token}\n")
    return token


def reserve(data: dict[str, Any]) -> dict[str, Any]:
    """Non-reentrant, sync."""
    token = _step_started("reserve")
    time.sleep(0.03)
    return {**data, "reserve": token}


async def fetch(data: dict[str, Any]) -> dict[str, Any]:
    """Reentrant, async."""
    token = _step_started("fetch")
    await asyncio.sleep(0.25)
    return {**data, "fetch": token}


def transform(data: dict[str, Any]) -> dict[str, Any]:
    """Reentrant, sync."""
    token = _step_started("transform")
    time.sleep(0.25)
    return {**data, "transform": token}


async def commit(data: dict[str, Any]) -> dict[str, Any]:
    """Non-reentrant, async."""
    token = _step_started("commit")
    await asyncio.sleep(0.03)
    return {**data, "commit": token}


pipeline = app.pipeline(
    "proc.pipeline",
    reserve,
    reentrant(fetch),
    reentrant(transform),
    commit,
)
PIPELINE_STEPS = ("reserve", "fetch", "transform", "commit")
NON_REENTRANT = ("reserve", "commit")


@app.task(name="proc.log_line")
def log_line(text: str) -> None:
    """Log ``text`` through the standard logging module, as a user's handler would."""
    import logging

    logging.getLogger("user.handler").warning("handler says %s", text)


@app.task(name="proc.wf_add", max_retry=100)
async def wf_add(a: int, b: int) -> int:
    """A workflow step: an await of ``CONVEYOR_TEST_STEP_S`` seconds (room for a kill; 2 ms by
    default), then ``a + b``."""
    await asyncio.sleep(float(os.environ.get("CONVEYOR_TEST_STEP_S", "0.002")))
    return a + b


@app.task(name="proc.wf_body", max_retry=100)
def wf_body(values: list[int]) -> int:
    """A chord body: log one line per run (task id, attempt) in ``bodies-<pid>.txt``."""
    ctx = current_context()
    path = Path(os.environ["CONVEYOR_TEST_DIR"]) / f"bodies-{os.getpid()}.txt"
    with path.open("a") as out:
        out.write(f"{ctx.task_id} {ctx.retry_count}\n")
    return sum(values)


@app.task(name="proc.rated", rate_limit="20/s")
async def rated(n: int) -> int:
    """Log when the broker claimed this attempt and when it started (fleet rate-limit test)."""
    claimed = current_context().claimed_at
    assert claimed is not None
    path = Path(os.environ["CONVEYOR_TEST_DIR"]) / f"rated-{os.getpid()}.txt"
    with path.open("a") as out:
        out.write(f"{claimed.timestamp():.6f} {time.time():.6f}\n")
    return n


@app.task(name="proc.limited", max_concurrency=2, max_retry=100)
async def limited(n: int) -> int:
    """Log this worker's start and end of each attempt (fleet concurrency-limit test)."""
    path = Path(os.environ["CONVEYOR_TEST_DIR"]) / f"limited-{os.getpid()}.txt"
    with path.open("a") as out:
        out.write(f"start {n} {time.time():.6f}\n")
    await asyncio.sleep(0.3)
    with path.open("a") as out:
        out.write(f"end {n} {time.time():.6f}\n")
    return n
