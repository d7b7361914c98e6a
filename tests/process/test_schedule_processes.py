"""Three workers with the scheduler on, one SIGKILLed and restarted every 20 s, for three
minutes of 1-second fires: each fire time is enqueued exactly once and none is missed.

One fleet per broker (an SQLite file, a Redis namespace), the fleets running at the same time,
each with its own processes, its own broker and its own checks: the test takes about the run's
length, not the run's length per broker. ``CONVEYOR_TEST_SCHEDULE_S`` sets the length
(default 180).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from processes import Worker, spawn

from conveyor import Inspector, TaskState
from support import delete_namespace, wait_until

RUN_S = float(os.environ.get("CONVEYOR_TEST_SCHEDULE_S", "180"))
KILL_EVERY_S = 20.0

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(RUN_S + 150)]

FIRED = re.compile(r"schedule proc\.tick fired for (\S+): task (\S+)")


@pytest.fixture
def redis_fleet_url(redis_url: str) -> Iterator[str]:
    """A fresh Redis namespace for the Redis fleet, deleted afterwards."""
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    yield f"{redis_url}?namespace={namespace}"
    asyncio.run(delete_namespace(redis_url, namespace))


def fire_time(task_id: str) -> float:
    stamp = task_id.removeprefix("proc.tick:")
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


class Fleet:
    """Three scheduler workers on one broker, one of them killed and restarted on a clock."""

    def __init__(self, url: str, trace_dir: Path) -> None:
        self.url = url
        self.trace_dir = trace_dir
        self.workers: list[Worker] = []
        self.kills = 0

    def start(self) -> Worker:
        return spawn(
            self.workers, self.url, self.trace_dir, "-q", "default", target="schedule_app:app"
        )

    def run(self) -> None:
        """Start three workers, then kill one every KILL_EVERY_S (deadlines from the start, so
        slow restarts under load do not stretch the run) until RUN_S, then stop them all."""
        try:
            live = [self.start() for _ in range(3)]
            began = time.monotonic()
            while True:
                due = began + (self.kills + 1) * KILL_EVERY_S
                if due >= began + RUN_S:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                victim = live.pop(self.kills % len(live))
                os.kill(victim.pid, signal.SIGKILL)
                assert victim.proc.wait(timeout=10) == -signal.SIGKILL
                self.kills += 1
                live.append(self.start())
            time.sleep(max(0.0, began + RUN_S - time.monotonic()))
        finally:
            # Stop every scheduler before reading: a fire logged after the read would be missing.
            for worker in self.workers:
                worker.stop()

    def check(self) -> None:
        """Every fire time enqueued once, none missed, each logged fire among them."""
        with Inspector(self.url) as inspector:
            ids = wait_until(
                lambda: [t.id for t in inspector.list_tasks("ticks", TaskState.PENDING, size=1000)],
                within=10,
            )
            [entry] = inspector.list_schedules()
        times = sorted(fire_time(i) for i in ids)
        assert len(times) == len(set(times)) == len(ids), self.url
        assert times == [times[0] + s for s in range(len(times))], (
            f"a fire time was missed: {self.url}"
        )
        assert len(times) >= RUN_S - 5, self.url
        last = f"proc.tick:{datetime.fromtimestamp(times[-1], UTC):%Y%m%dT%H%M%SZ}"
        assert entry.last_task_id == last, self.url
        logs = "".join(line for worker in self.workers for line in worker.lines)
        fired = FIRED.findall(logs)
        assert len(fired) == len({task for _, task in fired}), (
            f"a fire time fired twice: {self.url}"
        )
        assert {task for _, task in fired} <= set(ids), self.url
        assert "skipped" not in logs, self.url
        assert self.kills >= int(RUN_S // KILL_EVERY_S) - 1, self.url


def test_each_fire_time_is_enqueued_once_while_schedulers_are_killed(
    tmp_path: Path, redis_fleet_url: str
) -> None:
    fleets = []
    for name, url in (("sqlite", f"sqlite:///{tmp_path / 'queue.db'}"), ("redis", redis_fleet_url)):
        trace_dir = tmp_path / f"trace-{name}"
        trace_dir.mkdir()
        fleets.append(Fleet(url, trace_dir))
    with ThreadPoolExecutor(len(fleets)) as pool:
        runs = [pool.submit(fleet.run) for fleet in fleets]
        for run in runs:
            run.result()
    for fleet in fleets:
        fleet.check()
