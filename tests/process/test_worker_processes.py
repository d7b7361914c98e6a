"""Real ``python -m conveyor worker`` processes on SQLite or Redis: kill -9, SIGTERM, sharing."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
import worker_app
from processes import Worker, spawn, traces

from conveyor import Client, Inspector, TaskState
from support import wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]


FAST_RECOVERY = ("--lease", "1", "--recover-interval", "0.2")


def test_task_of_a_killed_worker_is_completed_by_another(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    first = spawn(workers, url, trace_dir, *FAST_RECOVERY)
    with Client(url) as client:
        info = client.enqueue(worker_app.hang_first_time.task("job"))
    wait_until(lambda: traces(trace_dir, f"started-job-{first.pid}"), within=10.0)

    os.kill(first.pid, signal.SIGKILL)
    assert first.proc.wait(timeout=10) == -signal.SIGKILL
    second = spawn(workers, url, trace_dir, *FAST_RECOVERY)

    # The trace file is created before its text is written: wait for both.
    finished = wait_until(
        lambda: [p for p in traces(trace_dir, "finished-job-") if p.read_text()], within=15.0
    )
    assert [p.name for p in finished] == [f"finished-job-{second.pid}"]
    assert finished[0].read_text() == "1"  # the crash used up one attempt
    with Inspector(url) as inspector:
        stats = wait_until(
            lambda: (s := inspector.queue_info(info.queue)).active == 0 and s, within=5.0
        )
        assert (stats.pending, stats.retry, stats.archived) == (0, 0, 0)


def test_tasks_of_a_killed_worker_restart_within_lease_scan_and_grace(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    """The delivery contract's bound (G10): a dead worker's tasks start again elsewhere within
    lease + recovery scan + grace (``--recover-delay``) + 1 s of the kill."""
    lease_s, scan_s, grace_s = 1.0, 0.2, 0.5
    args = (
        "--lease", f"{lease_s}s", "--recover-interval", f"{scan_s}s",
        "--recover-delay", f"{grace_s}s", "--concurrency", "20",
    )  # fmt: skip
    doomed = spawn(workers, url, trace_dir, *args)
    with Client(url) as client:
        client.enqueue_many([worker_app.hang_first_time.task(f"g10x{i}") for i in range(8)])
    wait_until(lambda: len(traces(trace_dir, "started-g10x")) == 8, within=10.0)
    survivor = spawn(workers, url, trace_dir, *args)

    killed_at = time.time()
    os.kill(doomed.pid, signal.SIGKILL)
    assert doomed.proc.wait(timeout=10) == -signal.SIGKILL

    # Recovered together, the eight are due at spread times, all within the grace.
    restarts = wait_until(
        lambda: len(found := traces(trace_dir, "finished-g10x")) == 8 and found, within=15.0
    )
    assert {p.name.rsplit("-", 1)[1] for p in restarts} == {str(survivor.pid)}
    started = [
        (trace_dir / p.name.replace("finished-", "started-")).stat().st_mtime for p in restarts
    ]
    assert max(started) - killed_at <= lease_s + scan_s + grace_s + 1.0


# Redis only: a process frozen on SQLite may be frozen inside a write transaction, holding the
# file's one write lock, and then no other process can claim until it resumes (documented in
# docs/brokers.md). Fencing against a zombie's late outcome is covered on SQLite by the
# conformance suite and the model test.
@pytest.mark.parametrize("url", ["redis"], indirect=True)
def test_a_frozen_worker_cannot_complete_a_task_taken_over_by_another(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    """A zombie (SIGSTOP past its lease, then SIGCONT): its late outcome is refused."""
    zombie = spawn(workers, url, trace_dir, *FAST_RECOVERY)
    with Client(url) as client:
        info = client.enqueue(
            worker_app.slow_pid.task("job", 1.5), retention=timedelta(hours=1), max_retry=5
        )
    wait_until(lambda: traces(trace_dir, f"started-job-{zombie.pid}"), within=10.0)

    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        rescuer = spawn(workers, url, trace_dir, *FAST_RECOVERY)
        with Inspector(url) as inspector:
            done = wait_until(
                lambda: (
                    (t := inspector.get_task(info.queue, info.id)).state is TaskState.COMPLETED
                    and t
                ),
                within=20.0,
            )
            assert done.result == rescuer.pid
            assert done.retried == 1  # the zombie's lapsed lease counted as a failed attempt
    finally:
        os.kill(zombie.pid, signal.SIGCONT)

    # Awake again, the zombie learns it lost the lease (renewal or completion refused).
    wait_until(lambda: any("lease" in line and "lost" in line for line in zombie.lines), within=15)
    with Inspector(url) as inspector:
        after = inspector.get_task(info.queue, info.id)
    assert (after.state, after.result, after.retried) == (TaskState.COMPLETED, rescuer.pid, 1)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_sigterm_finishes_short_tasks_and_gives_long_ones_back(
    url: str, trace_dir: Path, workers: list[Worker], loop: str
) -> None:
    # On either event loop (--loop): signals, shutdown and the hand-back behave the same.
    worker = spawn(
        workers, url, trace_dir, "--concurrency", "2", "--shutdown-timeout", "1", "--loop", loop
    )
    assert f"event loop: {loop}" in "".join(worker.lines)
    with Client(url) as client:
        client.enqueue(worker_app.sleep.task("short", 0.5))
        long_info = client.enqueue(worker_app.sleep.task("long", 60))
    wait_until(
        lambda: traces(trace_dir, "started-short-") and traces(trace_dir, "started-long-"),
        within=10.0,
    )

    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=10) == 0

    assert traces(trace_dir, "finished-short-")
    assert not traces(trace_dir, "finished-long-")
    with Inspector(url) as inspector:
        task = inspector.get_task(long_info.queue, long_info.id)
    assert task.state is TaskState.PENDING
    assert task.retried == 0


def test_three_workers_run_each_task_exactly_once(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    for _ in range(3):
        spawn(workers, url, trace_dir, "--concurrency", "4")
    with Client(url) as client:
        infos = client.enqueue_many([worker_app.record.task(i) for i in range(300)])
    expected = sorted(info.id for info in infos)

    def recorded() -> list[str]:
        return [
            line for path in trace_dir.glob("done-*.txt") for line in path.read_text().splitlines()
        ]

    wait_until(lambda: len(recorded()) >= 300, within=20.0)
    with Inspector(url) as inspector:
        wait_until(lambda: inspector.queue_info("default").size == 0, within=10.0)
    ids = recorded()
    assert sorted(ids) == expected  # none missing, none twice
    assert len(set(ids)) == len(ids) == 300
