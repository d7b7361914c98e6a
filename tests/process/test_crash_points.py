"""Workers that die mid-work lose no task, and a task that kills its worker ends dead.

First, two worker processes run with every crash point (``CONVEYOR_CRASHPOINTS``) armed: after
a claim, around the handler, around the acknowledgement, before a retry and before lease
renewal. A supervisor respawns each one that dies. The checker then reads the handlers'
start/end log and the broker:

- every enqueued task is COMPLETED (at-least-once: nothing lost, nothing left active or waiting);
- no execution of a task id that was never enqueued;
- a task that ran to its end more than once is attributable to a kill: every end but one was
  in a worker that was then SIGKILLed (its acknowledgement died with it);
- on SQLite, the file passes ``PRAGMA integrity_check`` after all those SIGKILLs.

Then a crash-poison task (it SIGKILLs whichever worker runs it) among normal ones: it is dead
after exactly ``--max-crash-attempts`` claims although it has retries left (and after
``max_retry + 1`` claims when that comes first), and the normal tasks still complete."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import worker_app
from processes import Worker, events

from conveyor import Client, Inspector, TaskState
from conveyor.brokers.protocol import LEASE_EXPIRED_ERROR, crash_limit_error
from support import wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]

TASKS = 150
CONCURRENCY = 4
# Per passage: high enough that a run sees a dozen or more kills, low enough to make progress.
CRASHPOINTS = (
    "after_claim:0.03,before_handler:0.01,after_handler:0.01,before_ack:0.04,after_ack:0.04,"
    "before_retry:0.05,before_renew:0.05"
)
# A task in flight at several kills loses several leases: the crash limit is raised out of the
# way here, as max_retry is, so every task must end COMPLETED.
ARGS = (
    "--concurrency", str(CONCURRENCY), "--lease", "1", "--recover-interval", "0.2",
    "--max-crash-attempts", "1000",
)  # fmt: skip


def test_crashing_workers_lose_no_task(url: str, trace_dir: Path) -> None:
    env = {"CONVEYOR_CRASHPOINTS": CRASHPOINTS}
    with Client(url) as client:
        # A plain Client does not know the App's per-task defaults: give the options here.
        infos = client.enqueue_many(
            [worker_app.logged.task(i) for i in range(TASKS)],
            retention=timedelta(hours=1),
            max_retry=50,
        )
    expected = {info.id for info in infos}

    running = [Worker(url, trace_dir, *ARGS, env=env) for _ in range(2)]
    killed: set[int] = set()
    deadline = time.monotonic() + 150
    try:
        with Inspector(url) as inspector:
            while inspector.queue_info("default").completed < TASKS:
                assert time.monotonic() < deadline, inspector.queue_info("default")
                for i, worker in enumerate(running):
                    code = worker.proc.poll()
                    if code is None:
                        continue
                    assert code == -signal.SIGKILL, "".join(worker.lines)[-3000:]
                    killed.add(worker.pid)
                    worker.stop()
                    running[i] = Worker(url, trace_dir, *ARGS, env=env)
                time.sleep(0.05)  # supervising child processes: poll them, there is no event
            stats = wait_until(
                lambda: (s := inspector.queue_info("default")).completed == TASKS and s
            )
            assert (stats.pending, stats.active, stats.retry, stats.archived) == (0, 0, 0, 0)
    finally:
        for worker in running:
            worker.stop()

    log = events(trace_dir)
    ends = Counter(task_id for kind, task_id, _, _ in log if kind == "end")
    assert {task_id for _, task_id, _, _ in log} <= expected, "ran a task nobody enqueued"
    assert set(ends) == expected, "a completed task never reached its end"
    print(f"kills: {len(killed)}, duplicates: {sum(n - 1 for n in ends.values())}")
    assert killed, "no crash point fired: the test tested nothing"
    for task_id, count in ends.items():
        if count > 1:
            pids = [pid for kind, tid, _, pid in log if kind == "end" and tid == task_id]
            in_killed = sum(pid in killed for pid in pids)
            assert in_killed >= count - 1, f"duplicate of {task_id} with no kill: {pids}"

    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize(
    ("max_retry", "max_crashes", "claims"),
    [(10, 2, 2), (1, 3, 2)],
    ids=["crash-limit-first", "retries-run-out-first"],
)
def test_a_task_that_kills_its_worker_is_archived_after_its_crash_limit(
    url: str, trace_dir: Path, max_retry: int, max_crashes: int, claims: int
) -> None:
    with Client(url) as client:
        bad = client.enqueue(worker_app.poison.task(), max_retry=max_retry)
        good = client.enqueue_many(
            [worker_app.logged.task(i) for i in range(20)], retention=timedelta(hours=1)
        )
    # A task running beside the poison loses its lease too, and counts a crash. With a crash
    # limit this low, one that shared the worker at every kill would be archived as well
    # (documented in docs/workers.md), so that case runs one task at a time.
    concurrency = "1" if claims == max_crashes else "2"
    args = ("--concurrency", concurrency, "--lease", "1", "--recover-interval", "0.2")
    args += ("--max-crash-attempts", str(max_crashes))
    worker = Worker(url, trace_dir, *args)
    kills = 0
    deadline = time.monotonic() + 60
    try:
        with Inspector(url) as inspector:
            while inspector.get_task(bad.queue, bad.id).state is not TaskState.ARCHIVED:
                assert time.monotonic() < deadline, inspector.get_task(bad.queue, bad.id)
                if worker.proc.poll() is not None:
                    assert worker.proc.returncode == -signal.SIGKILL
                    kills += 1
                    worker.stop()
                    worker = Worker(url, trace_dir, *args)
                time.sleep(0.05)  # supervising a child process: poll it
            dead = inspector.get_task(bad.queue, bad.id)
            wait_until(lambda: inspector.queue_info("default").completed == len(good), within=30)
    finally:
        worker.stop()
    assert kills == claims  # claimed max_crashes or max_retry + 1 times, then dead
    error = crash_limit_error(max_crashes) if claims == max_crashes else LEASE_EXPIRED_ERROR
    assert (dead.retried, dead.last_error) == (claims, error)
