"""Workers whose own clock jumps run nothing early, recover no healthy lease, lose nothing.

Two real worker processes run under libfaketime, their offset read from a file on every clock
call (``FAKETIME_TIMESTAMP_FILE`` + ``FAKETIME_NO_CACHE=1``). The test keeps the real clock and
rewrites the file to jump the workers' wall clocks by +30 s, -30 s, +1 h and -1 h, each while
tasks are in flight: a 2 s handler (shorter than the 3 s lease), a 4 s one (kept only by
renewal), short ones, and tasks due 1-3 s later (``enqueue_in`` from the test, so the due time
is Redis's ``TIME`` at the enqueue). The Redis broker takes every time (lease expiry, due times,
recovery) from Redis's ``TIME``, so the checker requires, by the handlers' JSON log and the
broker:

- every enqueued task completed exactly once, on its first attempt (``retried == 0``, one
  start and one end, attempt 0): none lost, no healthy lease recovered;
- no task due later started before its due time by Redis's clock;
- each jump reached the workers (their ``time.time()`` in the handler moved by it);
- each worker logged the clock-skew warning, and no recovery or lost lease;
- nothing left pending, scheduled, active, retrying or archived.

Only the wall clock is faked (``FAKETIME_DONT_FAKE_MONOTONIC=1``): a real clock step (an admin,
a VM resume, NTP stepping) moves ``CLOCK_REALTIME`` and never ``CLOCK_MONOTONIC``. Faked
monotonic time would model no real fault, and asyncio schedules every timer on it: a -1 h step
would freeze each timer of the worker for an hour (a stopped process, which the zombie test
covers), and libfaketime 0.9.10 with a -1 h offset even reported a monotonic time equal to the
faked wall time, a jump of decades. Linux's ``CLOCK_MONOTONIC`` is one clock for all processes,
so the test's own waits run on the same, unfaked time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import worker_app
from processes import Worker, spawn
from redis_servers import IN_CI

from conveyor import Client, Inspector, TaskInfo, TaskState
from support import delete_namespace, wait_until

pytestmark = [pytest.mark.process, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(120)]

# Offsets in the file format libfaketime 0.9.10 reads ("+N" seconds, or with a m/h/d suffix),
# with the jump each one means in seconds.
JUMPS = (("+30", 30.0), ("-30", -30.0), ("+1h", 3600.0), ("-1h", -3600.0))
CONCURRENCY = 4
ARGS = ("--concurrency", str(CONCURRENCY), "--lease", "3", "--recover-interval", "0.5")
ETA_DELAYS = (1.0, 2.0, 3.0)
# The handler reads Redis's TIME after its claim, and the claim script read it at or after the
# due time: with a correct broker the start is never before the due time on that one clock. The
# margin only absorbs a step of the Redis host's own clock between the two readings (NTP); a
# run decided by a jumped worker clock would be early by whole seconds, up to an hour.
EARLY_MARGIN_S = 0.005
SKEW = re.compile(r"this machine's clock is ([+-]\d+\.\d)s off the broker's")
TROUBLE = ("recovered", "lost", "refused", "could not record", "Traceback")


def _libfaketime() -> str:
    """The libfaketime library's path; skip locally, fail in CI, when it is not installed."""
    candidates = [os.environ.get("CONVEYOR_TEST_LIBFAKETIME", "")]
    for lib in ("/usr/lib", "/usr/local/lib", "/usr/lib64"):
        candidates += [str(p) for p in sorted(Path(lib).glob("*/faketime/libfaketime.so.1"))]
        candidates.append(f"{lib}/faketime/libfaketime.so.1")
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    if found is None:
        message = "libfaketime unavailable: no libfaketime.so.1 (apt-get install libfaketime)"
        if IN_CI:
            pytest.fail(message + " (CI=true requires it)")
        pytest.skip(message)
    return found


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    name = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    yield name
    asyncio.run(delete_namespace(redis_url, name))


def _set_offset(path: Path, offset: str) -> None:
    """Replace the offset file in one step: a half-written file would read as no offset."""
    scratch = path.with_suffix(".new")
    scratch.write_text(offset + "\n")
    os.replace(scratch, path)


def _records(trace_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in trace_dir.glob("clocked-*.jsonl")
        for line in path.read_text().splitlines()
    ]


def _started(trace_dir: Path, ids: set[str]) -> set[str]:
    return {r["id"] for r in _records(trace_dir) if r["kind"] == "start"} & ids


def _ended(trace_dir: Path, ids: set[str]) -> bool:
    return ids <= {r["id"] for r in _records(trace_dir) if r["kind"] == "end"}


def test_clock_jumps_on_workers_cause_no_early_run_no_recovery_and_no_loss(
    redis_url: str, namespace: str, trace_dir: Path, tmp_path: Path
) -> None:
    library = _libfaketime()
    offset_file = tmp_path / "faketime.rc"
    _set_offset(offset_file, "+0")
    env = {
        "LD_PRELOAD": library,
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "CONVEYOR_TEST_TIME_URL": redis_url,
    }
    url = f"{redis_url}?namespace={namespace}"
    started_at = time.monotonic()
    workers: list[Worker] = []
    infos: list[TaskInfo] = []
    try:
        for _ in range(2):
            spawn(workers, url, trace_dir, *ARGS, env=env)
        with Client(url) as client, Inspector(url) as inspector:

            def enqueue(seconds: float, delay: float = 0.0) -> TaskInfo:
                task = worker_app.clocked.task(seconds)
                options: dict[str, Any] = {"retention": timedelta(hours=1), "max_retry": 5}
                if delay:
                    info = client.enqueue_in(delay, task, **options)
                else:
                    info = client.enqueue(task, **options)
                infos.append(info)
                return info

            for offset, _ in JUMPS:
                long_ids = {enqueue(2.0).id, enqueue(4.0).id}  # 4 s outlives the 3 s lease
                phase = {enqueue(0.05, delay).id for delay in ETA_DELAYS}
                phase |= {enqueue(0.05).id for _ in range(CONCURRENCY)}
                wait_until(lambda ids=long_ids: _started(trace_dir, ids) == ids, within=10.0)

                _set_offset(offset_file, offset)  # the long handlers are running now

                # Claims after the jump, at least one worker's worth beyond the free slots of
                # the other, so both claim under the new offset; one more due later.
                phase |= {enqueue(0.3).id for _ in range(2 * CONCURRENCY)}
                phase |= {enqueue(0.05, 1.0).id}
                phase |= long_ids
                wait_until(lambda ids=phase: _ended(trace_dir, ids), within=15.0)

            _set_offset(offset_file, "+0")
            expected = {info.id for info in infos}
            stats = wait_until(
                lambda: (s := inspector.queue_info("default")).completed == len(expected) and s,
                within=10.0,
            )
            tasks = [inspector.get_task(info.queue, info.id) for info in infos]
        logs = ["".join(worker.lines) for worker in workers]
        alive = [worker.proc.poll() is None for worker in workers]
    finally:
        for worker in workers:
            worker.stop()
    runtime = time.monotonic() - started_at

    # Nothing left anywhere; each task completed on its first attempt (no lease recovered).
    assert (stats.pending, stats.scheduled, stats.active) == (0, 0, 0), stats
    assert (stats.retry, stats.archived) == (0, 0), stats
    assert all(alive), logs
    for task in tasks:
        assert (task.state, task.retried, task.last_error) == (TaskState.COMPLETED, 0, None), task

    # The handlers' log: one start and one end per task, attempt 0, nothing unknown.
    records = _records(trace_dir)
    starts = {r["id"]: r for r in records if r["kind"] == "start"}
    counts = Counter((r["kind"], r["id"]) for r in records)
    assert set(starts) == expected, "a task never started, or an unknown one did"
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]
    assert {r["attempt"] for r in records} == {0}

    # No task due later started before its due time, by Redis's clock.
    due = [
        (info.id, info.next_process_at.timestamp(), starts[info.id]["redis"])
        for info in infos
        if info.state is TaskState.SCHEDULED and info.next_process_at is not None
    ]
    assert len(due) == len(JUMPS) * (len(ETA_DELAYS) + 1)
    early = [(task_id, at - when) for task_id, when, at in due if at < when - EARLY_MARGIN_S]
    assert not early, f"started before due (seconds late, negative = early): {early}"

    # Each jump reached the workers' time.time(): it read Redis's TIME plus the offset.
    seen = [r["wall"] - r["redis"] for r in records if r["kind"] == "start"]
    for offset, seconds in JUMPS:
        assert any(abs(s - seconds) < 1.0 for s in seen), f"jump {offset} never seen: {seen}"

    # Each worker warned of the skew once (at most every ten minutes), with a jumped offset;
    # none recovered a task or lost a lease.
    for log in logs:
        warned = [float(v) for v in SKEW.findall(log)]
        assert len(warned) == 1, log[-3000:]
        assert any(abs(warned[0] - s) < 2.0 for _, s in JUMPS), warned
        assert not [t for t in TROUBLE if t in log], log[-3000:]
    late_ms = sorted(round((at - when) * 1000) for _, when, at in due)
    print(f"\nclock jumps: {len(expected)} tasks in {runtime:.1f}s; due tasks started")
    print(f"{late_ms[0]}-{late_ms[-1]} ms after due; skew warnings: {SKEW.findall(''.join(logs))}")
