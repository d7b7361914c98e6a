"""Several processes on one SQLite file: exactly-once claims, kill -9 safety, wake-ups."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.brokers.sqlite import SqliteBroker
from conveyor.brokers.sqlite import broker as broker_module
from conveyor.brokers.sqlite.wake import wake_directory
from conveyor.message import TaskMessage, TaskState
from support import eventually

CHILD = str(Path(__file__).with_name("sqlite_child.py"))


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def rest_of_output(child: subprocess.Popen[str]) -> list[str]:
    """The lines a killed child printed that were not read yet.

    Read through ``child.stdout`` itself: ``communicate()`` reads the pipe underneath it, which
    skips what ``readline()`` already buffered and can start in the middle of a line.
    """
    assert child.stdout is not None
    rest = child.stdout.read()
    child.wait(timeout=30)
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()
    return rest.split()


async def test_concurrent_processes_claim_every_task_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    broker = SqliteBroker(db)
    ids = [f"task-{n}" for n in range(900)]
    await broker.enqueue([TaskMessage(id=i, type="t") for i in ids])

    children = [spawn("claim", str(db), str(batch)) for batch in (1, 7, 32)]
    outputs = [child.communicate(timeout=90) for child in children]

    assert [child.returncode for child in children] == [0, 0, 0], [err for _, err in outputs]
    claimed = [line for out, _ in outputs for line in out.split()]
    assert sorted(claimed) == sorted(ids)  # every task once: no loss, no duplicate
    stats = await broker.queue_stats("default")
    assert (stats.pending, stats.active, stats.processed_today) == (0, 0, 900)
    await broker.close()


@pytest.mark.parametrize("mode", ["enqueue", "enqueue-claim", "enqueue-checkpoint"])
async def test_kill_9_mid_writes_loses_no_acknowledged_enqueue(tmp_path: Path, mode: str) -> None:
    db = tmp_path / "killed.db"
    child = spawn(mode, str(db))
    assert child.stdout is not None
    acknowledged: list[str] = []
    while len(acknowledged) < 300:  # the child writes without pause: kill it mid-transaction
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else "child exited"
        acknowledged.append(line.strip())
    os.kill(child.pid, signal.SIGKILL)
    acknowledged += rest_of_output(child)  # printed before the kill: acknowledged too
    assert child.returncode == -signal.SIGKILL

    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    raw.close()
    broker = SqliteBroker(db)
    for task_id in acknowledged:
        info = await broker.get_task("default", task_id)
        assert info.state in (TaskState.PENDING, TaskState.ACTIVE, TaskState.COMPLETED)
    # The file is still usable for new work after the crash.
    await broker.enqueue([TaskMessage(id="after-crash", type="t")])
    assert (await broker.get_task("default", "after-crash")).state is TaskState.PENDING
    await broker.close()


async def test_two_producers_checkpointing_under_kill_9_keep_the_file_intact(
    tmp_path: Path,
) -> None:
    # No pause between checkpoints: both processes' checkpointers copy back and rewind all the
    # time, each against the other's commits, until both are killed mid-write.
    db = tmp_path / "two.db"
    creator = SqliteBroker(db)
    await creator.list_queues()  # the schema exists before both children open the file
    await creator.close()
    children = [spawn("enqueue-checkpoint", str(db)) for _ in range(2)]
    acknowledged: list[str] = []
    for child in children:
        assert child.stdout is not None
        for _ in range(300):
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "child exited"
            acknowledged.append(line.strip())
    for child in children:
        os.kill(child.pid, signal.SIGKILL)
    for child in children:
        acknowledged += rest_of_output(child)

    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    stored = {row[0] for row in raw.execute("SELECT id FROM tasks")}
    raw.close()
    assert set(acknowledged) <= stored


async def test_wake_up_across_two_broker_instances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the fallback poll pushed out to a minute, only the wake socket can end the wait early.
    monkeypatch.setattr(broker_module, "POLL_S", 60.0)
    db = tmp_path / "wake.db"
    waiter, producer = SqliteBroker(db), SqliteBroker(db)
    await producer.list_queues()  # create the schema
    waiting = asyncio.create_task(waiter.wait_for_tasks(["default"], timeout_s=60.0))
    await eventually(lambda: _probed(waiter), within=10.0)
    assert len(list(wake_directory(db).glob("*.sock"))) == 1
    await producer.enqueue([TaskMessage(id="wake-me", type="t")])

    await asyncio.wait_for(waiting, timeout=10.0)  # far below the 60 s timeout
    leases = await waiter.claim(["default"], limit=1, lease_s=30)
    assert [le.task.id for le in leases] == ["wake-me"]
    await waiter.close()
    await producer.close()
    assert list(wake_directory(db).glob("*.sock")) == []  # close removed the socket


async def _probed(broker: SqliteBroker) -> bool:
    """True once the waiter has registered itself and is sleeping."""
    with broker._lock:
        return bool(broker._waiters)


async def test_wake_up_from_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_module, "POLL_S", 60.0)
    db = tmp_path / "wake-proc.db"
    waiter = SqliteBroker(db)
    await waiter.list_queues()
    waiting = asyncio.create_task(waiter.wait_for_tasks(["default"], timeout_s=60.0))
    await eventually(lambda: _probed(waiter), within=10.0)

    child = spawn("enqueue", str(db))  # enqueues without pause; the first one wakes us
    try:
        await asyncio.wait_for(waiting, timeout=20.0)
    finally:
        child.kill()
        child.communicate(timeout=30)
    assert await waiter.claim(["default"], limit=1, lease_s=30)
    await waiter.close()


async def test_a_dead_waiters_socket_is_removed_by_the_next_sender(tmp_path: Path) -> None:
    import socket

    db = tmp_path / "stale.db"
    directory = wake_directory(db)
    directory.mkdir()
    stale = directory / "12345-deadbeef.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens: like a waiter killed with -9
    broker = SqliteBroker(db)

    await broker.enqueue([TaskMessage(id="x", type="t")])

    assert not stale.exists()
    await broker.close()


async def test_long_database_paths_still_get_wake_ups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unix socket paths are capped near 108 bytes; deep directories go through /proc/self/fd.
    monkeypatch.setattr(broker_module, "POLL_S", 60.0)
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)
    deep.mkdir(parents=True)
    db = deep / "broker.db"
    waiter, producer = SqliteBroker(db), SqliteBroker(db)
    await producer.list_queues()
    waiting = asyncio.create_task(waiter.wait_for_tasks(["default"], timeout_s=60.0))
    await eventually(lambda: _probed(waiter), within=10.0)

    await producer.enqueue([TaskMessage(id="deep", type="t")])

    await asyncio.wait_for(waiting, timeout=10.0)
    await waiter.close()
    await producer.close()
