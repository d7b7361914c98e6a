"""Workers ride out Redis restarts and write pauses by themselves (G2 of shared/reliability.md).

A private redis-server (AOF, ``noeviction``, a random password) on a free loopback port; two real
worker processes drain while the test enqueues, and the server is restarted several times
(SIGKILL or ``SHUTDOWN``, down 0.2-1 s) or stalled with ``CLIENT PAUSE 3000 WRITE``. The workers
are never restarted. The checker reads the handlers' start/end log and the broker:

- with ``appendfsync always``, every acknowledged enqueue completes: none lost;
- no execution of a task id that was never enqueued;
- the workers carry on after the last fault: the tasks enqueued after it complete too.

With ``appendfsync everysec`` (Redis's default) the loss per SIGKILL is reported; it must stay
within one acknowledged write per kill (a process kill leaves the written AOF in the page cache,
so it is zero here in practice; an OS crash could lose about a second).
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import worker_app
from processes import Worker, events
from redis_servers import Fleet, RedisProcess, server, server_version

from conveyor import Client, Inspector
from conveyor.errors import BrokerUnavailableError, TaskIdConflictError
from support import wait_until

pytestmark = [pytest.mark.process, pytest.mark.redis, pytest.mark.timeout(240)]

ARGS = ("--concurrency", "8", "--lease", "3", "--recover-interval", "0.5")
PER_ROUND = 60


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with Fleet() as servers:
        yield servers


def _start_server(fleet: Fleet, data: Path, fsync: str) -> tuple[RedisProcess, str, str]:
    """A private server with AOF; its process, broker URL and password."""
    password = secrets.token_hex(12)
    aof = ("--appendonly", "yes", "--appendfsync", fsync, "--maxmemory-policy", "noeviction")
    process = fleet.add(server(data, *aof, "--requirepass", password))
    url = f"redis://:{password}@127.0.0.1:{process.port}/0?namespace=restarts"
    return process, url, password


def _enqueue_until_acked(client: Client, task_id: str, n: int) -> None:
    """Enqueue with this id until acknowledged; an indeterminate failure retries the same id."""
    deadline = time.monotonic() + 30
    while True:
        try:
            client.enqueue(
                worker_app.logged.task(n),
                task_id=task_id,
                retention=timedelta(hours=1),
                max_retry=50,
            )
            return
        except TaskIdConflictError:
            return  # an earlier, indeterminate attempt did store it
        except BrokerUnavailableError:
            assert time.monotonic() < deadline, "Redis never came back for the producer"
            time.sleep(0.05)


def _restart(process: RedisProcess, password: str, rng: random.Random) -> str:
    """Take the server down by SIGKILL (60 %) or SHUTDOWN, keep it down 0.2-1 s, start it."""
    how = "kill" if rng.random() < 0.6 else "shutdown"
    if how == "kill":
        process.kill()
    else:
        # redis-py reports the connection closing under it.
        with contextlib.suppress(Exception):
            process.client(password=password).shutdown()
        assert process.proc is not None
        process.proc.wait(timeout=10)
    time.sleep(rng.uniform(0.2, 1.0))
    process.start()
    return how


def _completed_ids(url: str) -> set[str]:
    found: set[str] = set()
    with Inspector(url) as inspector:
        for page in range(1, 100):
            tasks = inspector.list_tasks("default", "completed", page=page, size=1000)
            found.update(t.id for t in tasks)
            if len(tasks) < 1000:
                break
    return found


def _run_rounds(
    url: str, trace_dir: Path, fault: Callable[[], object], rounds: int
) -> tuple[list[str], list[Worker]]:
    """Enqueue PER_ROUND tasks per round with a fault in each; return the acknowledged ids."""
    workers = [Worker(url, trace_dir, *ARGS) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    acked: list[str] = []
    with Client(url) as client:
        for r in range(rounds + 1):  # the last round runs after the last fault
            for i in range(PER_ROUND):
                task_id = f"r{r}-{i}"
                _enqueue_until_acked(client, task_id, i)
                acked.append(task_id)
                if i == PER_ROUND // 2 and r < rounds:
                    fault()
    return acked, workers


def _check(url: str, trace_dir: Path, acked: list[str], workers: list[Worker]) -> set[str]:
    """Wait for the drain; check no unknown execution and living workers; return lost ids."""
    expected = set(acked)
    with contextlib.suppress(AssertionError):  # what never completes is reported as lost
        wait_until(lambda: _completed_ids(url) >= expected, within=60.0)
    done = _completed_ids(url)
    ran = {task_id for _, task_id, _, _ in events(trace_dir)}
    assert ran <= expected, f"executions of ids never enqueued: {sorted(ran - expected)[:5]}"
    for worker in workers:  # nobody restarted them: they carried on by themselves
        assert worker.proc.poll() is None, "".join(worker.lines)[-3000:]
    return expected - done


def test_restarts_with_aof_always_lose_no_acknowledged_task(
    fleet: Fleet, tmp_path: Path, trace_dir: Path
) -> None:
    process, url, password = _start_server(fleet, tmp_path / "redis", "always")
    rng = random.Random(7)
    kinds: list[str] = []
    acked, workers = _run_rounds(
        url, trace_dir, lambda: kinds.append(_restart(process, password, rng)), rounds=4
    )
    try:
        lost = _check(url, trace_dir, acked, workers)
    finally:
        for worker in workers:
            worker.stop()
    assert sorted(set(kinds)) == ["kill", "shutdown"], kinds
    assert not lost, f"{len(lost)} acknowledged tasks lost over restarts {kinds}"


def test_write_pauses_stall_but_lose_nothing(fleet: Fleet, tmp_path: Path, trace_dir: Path) -> None:
    process, url, password = _start_server(fleet, tmp_path / "redis", "always")

    def pause() -> None:
        with process.client(password=password) as admin:
            # WRITE mode (what a failover pauses with) is Redis 6.2's; before, every client stalls.
            mode = ("WRITE",) if server_version(admin) >= (6, 2) else ()
            admin.execute_command("CLIENT", "PAUSE", 3000, *mode)

    acked, workers = _run_rounds(url, trace_dir, pause, rounds=2)
    try:
        lost = _check(url, trace_dir, acked, workers)
    finally:
        for worker in workers:
            worker.stop()
    assert not lost, f"{len(lost)} acknowledged tasks lost over write pauses"


def test_everysec_loss_per_kill_is_reported_and_bounded(
    fleet: Fleet, tmp_path: Path, trace_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process, url, _ = _start_server(fleet, tmp_path / "redis", "everysec")
    kills = 3

    def kill() -> None:
        process.kill()
        time.sleep(0.3)
        process.start()

    acked, workers = _run_rounds(url, trace_dir, kill, rounds=kills)
    try:
        lost = _check(url, trace_dir, acked, workers)
    finally:
        for worker in workers:
            worker.stop()
    with capsys.disabled():
        print(f"\neverysec: {len(lost)} acknowledged tasks lost over {kills} SIGKILLs")
    assert len(lost) <= kills, f"lost {sorted(lost)} over {kills} kills"
