"""Three workers with the scheduler on, one SIGKILLed and restarted every 15 s: each fire time
of a 1-second entry is enqueued exactly once and none is missed (SQLite and Redis).

The run lasts ``CONVEYOR_TEST_SCHEDULE_S`` seconds (default 40 per broker, to keep the suite
short); set it to 180 for the three-minute run of the issue.
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from processes import Worker, spawn

from conveyor import Inspector, TaskState
from support import wait_until

RUN_S = float(os.environ.get("CONVEYOR_TEST_SCHEDULE_S", "40"))
KILL_EVERY_S = 15.0

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(RUN_S + 90)]

FIRED = re.compile(r"schedule proc\.tick fired for (\S+): task (\S+)")


def start(workers: list[Worker], url: str, trace_dir: Path) -> Worker:
    return spawn(workers, url, trace_dir, "-q", "default", target="schedule_app:app")


def fire_time(task_id: str) -> float:
    stamp = task_id.removeprefix("proc.tick:")
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def test_each_fire_time_is_enqueued_once_while_schedulers_are_killed(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    live = [start(workers, url, trace_dir) for _ in range(3)]
    began = time.monotonic()
    kills = 0
    while time.monotonic() - began < RUN_S:
        time.sleep(min(KILL_EVERY_S, RUN_S - (time.monotonic() - began)))
        if time.monotonic() - began >= RUN_S:
            break
        victim = live.pop(kills % len(live))
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.proc.wait(timeout=10) == -signal.SIGKILL
        kills += 1
        live.append(start(workers, url, trace_dir))
    # Stop every scheduler before reading: a fire logged after the read would be missing from it.
    for worker in workers:
        worker.stop()
    with Inspector(url) as inspector:
        ids = wait_until(
            lambda: [t.id for t in inspector.list_tasks("ticks", TaskState.PENDING, size=1000)],
            within=5,
        )
        [entry] = inspector.list_schedules()

    times = sorted(fire_time(i) for i in ids)
    assert len(times) == len(set(times)) == len(ids)
    assert times == [times[0] + s for s in range(len(times))], "a fire time was missed"
    assert len(times) >= RUN_S - 5
    assert (
        entry.last_task_id == f"proc.tick:{datetime.fromtimestamp(times[-1], UTC):%Y%m%dT%H%M%SZ}"
    )
    logs = "".join(line for worker in workers for line in worker.lines)
    fired = FIRED.findall(logs)
    assert len(fired) == len({task for _, task in fired}), "a fire time was fired twice"
    assert {task for _, task in fired} <= set(ids)
    assert "skipped" not in logs
    assert kills >= 2
