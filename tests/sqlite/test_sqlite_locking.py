"""Taking the write lock: polling for a lock held by another connection, not SQLite's sleeps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.brokers.sqlite import locking


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


def test_a_held_lock_is_taken_once_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, waiter = _connect(tmp_path / "db"), _connect(tmp_path / "db")
    holder.execute("BEGIN IMMEDIATE")
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # the other writer commits while this one waits
        pauses.append(seconds)
        if len(pauses) == 3:
            holder.execute("COMMIT")

    monkeypatch.setattr(locking.time, "sleep", pause)
    locking.begin_immediate(waiter, busy_timeout_s=5.0)

    assert waiter.in_transaction
    assert pauses == [50e-6, 100e-6, 200e-6]  # short pauses, doubling
    # SQLite's busy handler is back for every other statement.
    assert waiter.execute("PRAGMA busy_timeout").fetchone() == (5000,)
    waiter.execute("ROLLBACK")


def test_a_lock_held_past_the_timeout_fails_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, waiter = _connect(tmp_path / "db"), _connect(tmp_path / "db")
    holder.execute("BEGIN IMMEDIATE")
    clock = [0.0]

    def pause(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(locking.time, "sleep", pause)
    monkeypatch.setattr(locking.time, "monotonic", lambda: clock[0])
    with pytest.raises(sqlite3.OperationalError) as caught:
        locking.begin_immediate(waiter, busy_timeout_s=0.01)
    assert caught.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    assert 0.01 <= clock[0] < 0.011  # waited out the timeout, pauses capped at 500 us
    assert not waiter.in_transaction
    assert waiter.execute("PRAGMA busy_timeout").fetchone() == (10,)
    holder.execute("ROLLBACK")


def test_a_caller_that_will_not_wait_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, waiter = _connect(tmp_path / "db"), _connect(tmp_path / "db")
    holder.execute("BEGIN IMMEDIATE")
    pauses: list[float] = []
    monkeypatch.setattr(locking.time, "sleep", pauses.append)
    with pytest.raises(locking.LockBusy):
        locking.begin_immediate(waiter, busy_timeout_s=5.0, wait=False)
    assert pauses == []
    assert not waiter.in_transaction
    assert waiter.execute("PRAGMA busy_timeout").fetchone() == (5000,)
    holder.execute("ROLLBACK")
    locking.begin_immediate(waiter, busy_timeout_s=5.0, wait=False)  # a free lock is taken
    assert waiter.in_transaction
    waiter.execute("ROLLBACK")
