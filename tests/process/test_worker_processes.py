"""Real ``python -m conveyor worker`` processes on SQLite or Redis: kill -9, SIGTERM, sharing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Client, Inspector, TaskState
from support import delete_namespace, wait_until

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import worker_app  # noqa: E402

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]


class Worker:
    """One worker subprocess whose stderr is collected line by line on a thread."""

    def __init__(self, url: str, trace_dir: Path, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        env["CONVEYOR_TEST_DIR"] = str(trace_dir)
        env.pop("CONVEYOR_BROKER_URL", None)
        command = [sys.executable, "-m", "conveyor", "worker", "worker_app:app", "--broker", url]
        self.proc = subprocess.Popen(
            [*command, *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
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


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "trace"
    directory.mkdir()
    return directory


@pytest.fixture(params=("sqlite", "redis"))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh broker for the test's worker processes: an SQLite file or a Redis namespace."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    redis_url = request.getfixturevalue("redis_url")
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    yield f"{redis_url}?namespace={namespace}"
    asyncio.run(delete_namespace(redis_url, namespace))


@pytest.fixture
def workers(url: str, trace_dir: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def spawn(workers: list[Worker], url: str, trace_dir: Path, *args: str) -> Worker:
    worker = Worker(url, trace_dir, *args)
    workers.append(worker)
    worker.wait_ready()
    return worker


def traces(trace_dir: Path, prefix: str) -> list[Path]:
    return sorted(trace_dir.glob(prefix + "*"))


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


def test_sigterm_finishes_short_tasks_and_gives_long_ones_back(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    worker = spawn(workers, url, trace_dir, "--concurrency", "2", "--shutdown-timeout", "1")
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
