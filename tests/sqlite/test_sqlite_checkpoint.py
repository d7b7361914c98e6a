"""WAL checkpoints off the commit path: the background checkpointer and its safety nets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.brokers.sqlite import SqliteBroker, checkpoint
from conveyor.message import TaskMessage, TaskState
from support import eventually

# Frames a single-task commit appends (table and index leaves): about 5; 4 is a low estimate.
FRAMES_PER_COMMIT = 4


def message(task_id: str) -> TaskMessage:
    return TaskMessage(id=task_id, type="t", payload=b"[1]")


def wal_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_commits_leave_automatic_checkpoints_to_the_background(tmp_path: Path) -> None:
    broker = SqliteBroker(tmp_path / "c.db")
    for n in range(20):
        await broker.enqueue([message(f"t{n}")])
    pragmas = await broker._run(
        lambda s: [
            s.conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("wal_autocheckpoint", "journal_size_limit")
        ]
    )
    assert pragmas == [checkpoint.SAFETY_FRAMES, checkpoint.WAL_SIZE_LIMIT]

    checkpointer = broker._checkpointer

    async def copied_back() -> bool:
        last = checkpointer.last
        return last is not None and last[0] == 0 and last[1] == last[2] > 0

    await eventually(copied_back)
    await broker.close()


async def test_a_steady_stream_of_commits_still_rewinds_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the checkpointer can start the WAL over here: SQLite's own checkpoint is pushed far
    # out, and commits follow each other without a pause for a checkpoint to catch up in.
    monkeypatch.setattr(checkpoint, "SAFETY_FRAMES", 10**6)
    db = tmp_path / "stream.db"
    broker = SqliteBroker(db)
    commits = 0
    while broker._checkpointer.rewinds < 3:
        await broker.enqueue([message(f"t{commits}")])
        commits += 1
        assert commits < 200_000, "the WAL was never started over"
    assert (await broker.queue_stats("default")).pending == commits
    await broker.close()


async def test_without_the_checkpointer_commits_checkpoint_past_the_safety_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "SAFETY_FRAMES", 64)
    db = tmp_path / "safety.db"
    broker = SqliteBroker(db)
    monkeypatch.setattr(broker._checkpointer, "committed", lambda: None)  # never starts
    page = await broker._run(lambda s: s.conn.execute("PRAGMA page_size").fetchone()[0])
    commits = 2000
    for n in range(commits):
        await broker.enqueue([message(f"t{n}")])
    assert wal_bytes(db) < commits * FRAMES_PER_COMMIT * page / 10
    assert broker._checkpointer.runs == 0
    await broker.close()


async def test_close_checkpoints_what_is_left(tmp_path: Path) -> None:
    db = tmp_path / "close.db"
    writer, other = SqliteBroker(db), SqliteBroker(db)
    await other.list_queues()  # keeps the file open, so closing the writer does not delete the WAL
    for n in range(50):
        await writer.enqueue([message(f"t{n}")])
    await writer.close()

    last = writer._checkpointer.last
    assert last is not None and last[0] == 0 and last[1] == last[2]
    assert (await other.queue_stats("default")).pending == 50
    await other.close()
    assert wal_bytes(db) == 0  # the last connection closed removes the WAL


async def test_a_broker_that_never_writes_starts_no_checkpointer(tmp_path: Path) -> None:
    broker = SqliteBroker(tmp_path / "read.db")
    await broker.list_queues()
    await broker.list_tasks("default", TaskState.PENDING)
    await broker.close()
    assert broker._checkpointer.runs == 0 and broker._checkpointer._thread is None


async def test_rewinds_under_a_held_reader_wait_for_it_without_losing_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader in another connection pins the WAL: no checkpoint may copy past its snapshot, and
    # nothing may rewind the WAL under it. Writes go on; once it ends, the WAL is copied back.
    monkeypatch.setattr(checkpoint, "INTERVAL_S", 0.0)
    db = SqliteBroker.from_url(f"sqlite:///{tmp_path / 'pinned.db'}?busy_timeout_ms=50")
    await db.enqueue([message("before")])
    reader = sqlite3.connect(db.path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM tasks").fetchone() == (1,)
    for n in range(200):
        await db.enqueue([message(f"t{n}")])
    assert reader.execute("SELECT count(*) FROM tasks").fetchone() == (1,)  # its snapshot holds
    reader.execute("COMMIT")
    reader.close()

    later = iter(range(10**9))

    async def copied_back() -> bool:
        await db.enqueue([message(f"after-{next(later)}")])
        last = db._checkpointer.last
        return last is not None and last[0] == 0 and last[1] == last[2]

    await eventually(copied_back)
    raw = sqlite3.connect(db.path)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert raw.execute("SELECT count(*) FROM tasks WHERE id LIKE 't%'").fetchone() == (200,)
    raw.close()
    await db.close()


async def test_no_commit_can_run_while_a_checkpoint_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite before 3.51.3 can corrupt a database when a commit that starts the WAL over races
    # a checkpoint (the "WAL-reset bug"): every background checkpoint holds the write lock.
    db = tmp_path / "guarded.db"
    copy_back = checkpoint.copy_back
    writable: list[bool] = []

    def probing(conn: sqlite3.Connection) -> tuple[int, int, int]:
        probe = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            writable.append(True)
        except sqlite3.OperationalError:  # database is locked
            writable.append(False)
        finally:
            probe.close()
        return copy_back(conn)

    monkeypatch.setattr(checkpoint, "copy_back", probing)
    broker = SqliteBroker(db)
    for n in range(50):
        await broker.enqueue([message(f"t{n}")])

    async def ran_twice() -> bool:
        return broker._checkpointer.runs >= 2

    await eventually(ran_twice)
    await broker.close()
    assert len(writable) >= 2 and not any(writable)


def test_presync_leaves_a_missing_wal_alone_and_syncs_one_that_is_there(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    checkpoint.presync(db.with_name(db.name + "-wal"))  # no WAL yet: nothing to do
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    checkpoint.presync(db.with_name(db.name + "-wal"))
    # Still usable afterwards: closing the descriptor released none of the connection's locks.
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (2)")
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    conn.close()
