"""Taking SQLite's write lock: ``BEGIN IMMEDIATE`` waiting for another connection by polling.

SQLite's own busy handler sleeps 1 ms at the first refusal, then 2, 5, 10 ms and more: a
transaction of a tenth of a millisecond in another process, or a checkpoint of a few, kept a
waiting writer asleep several times as long as the lock was held, its worker's settlements
queueing behind it. Here the lock is tried again after 50 us, the pause doubling up to 500 us.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["LockBusy", "begin_immediate"]

_POLL_FIRST_S = 50e-6
_POLL_MAX_S = 500e-6
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class LockBusy(Exception):
    """The write lock was held elsewhere and the caller asked not to wait for it."""


def begin_immediate(conn: sqlite3.Connection, busy_timeout_s: float, *, wait: bool = True) -> None:
    """``BEGIN IMMEDIATE`` on ``conn``, polling for a write lock held elsewhere for up to
    ``busy_timeout_s``. The connection's busy handler is off for this statement only: it is
    set back to ``busy_timeout_s`` before any other runs.

    Raises:
        LockBusy: ``wait`` is false and the lock was held elsewhere (nothing was begun).
        sqlite3.OperationalError: the lock stayed held for ``busy_timeout_s`` (SQLITE_BUSY), or
            another error.
    """
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        pause = _POLL_FIRST_S
        deadline: float | None = None
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in _BUSY:
                    raise
                if not wait:
                    raise LockBusy from None
                now = time.monotonic()
                deadline = now + busy_timeout_s if deadline is None else deadline
                if now >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_S)
    finally:
        # Integer milliseconds from the broker's own setting: PRAGMAs take no parameters.
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
