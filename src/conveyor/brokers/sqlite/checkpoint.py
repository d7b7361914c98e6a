"""WAL checkpoints on a background thread, off the commit path, each one holding the write lock.

With ``synchronous=NORMAL`` a commit only appends to the WAL; the fsyncs happen when a checkpoint
copies the WAL back into the database file. SQLite's automatic checkpoint runs inside the commit
that crosses its threshold (1000 pages), so every few hundred single-task enqueues one of them
waits for the fsync of megabytes of WAL: about half the cost of a single enqueue, measured.

Here the broker's connection checkpoints automatically only past a large safety threshold, and a
:class:`Checkpointer` thread with connections of its own copies the WAL back instead: after a
write, at most every :data:`INTERVAL_S`, it takes the database's write lock with a second
connection (``BEGIN IMMEDIATE``, waiting at most :data:`GUARD_WAIT_S`), runs a ``PASSIVE``
checkpoint, and lets the lock go again without writing.

Why the write lock: SQLite before 3.51.3 (3.50.7 and 3.44.6 on their branches) has a data race,
the "WAL-reset bug" (https://sqlite.org/wal.html#walresetbug): a checkpoint that starts just
after another one copied the whole WAL back can miss a commit, by another connection, that
starts the WAL over, and the database is later corrupted. Frequent background checkpoints in
several processes, each racing the others' commits, made that rare race likely (a soak run with
SIGKILLed workers hit it in minutes). No commit can run while the lock is held, so none can
race a checkpoint, whatever the SQLite version. Commits wait for the checkpoint instead (it
copies what ~100 ms of commits wrote, and fsyncs): in the bench, single enqueues run about a
fifth slower than with unguarded checkpoints, and drains no slower. With SQLite 3.51.3 or newer
the guard is not needed; it is kept for every version, as this machine cannot test the other
path.

* With the whole WAL copied back under the lock, the next write starts the WAL over, so a
  steady stream of commits cannot make it grow.
* A long read transaction pins the WAL: no checkpoint can copy past its snapshot; the WAL is
  copied back and started over once it ends.
* The broker's connection keeps SQLite's automatic checkpoint at :data:`SAFETY_FRAMES`, so the
  WAL stays bounded even if this thread cannot run or keep up (that checkpoint holds no lock).
* On close it runs a last checkpoint, so a closed broker leaves little WAL behind.
* The WAL file is fsynced before the lock is taken (:func:`presync`): the checkpoint's own sync
  of the WAL then has only the commits of that moment left to write, so the lock is held for
  about half as long.

Checkpoints are SQLite's own crash-safe mechanism whichever connection runs them: a process
killed in the middle of one leaves a WAL that the next opener recovers, and a killed process's
write lock is released with it. The checkpointing connection uses the broker's ``synchronous``
setting, so the WAL is fsynced before any page is copied back, as in an automatic checkpoint.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

INTERVAL_S = 0.1
"""The shortest time between two background checkpoints. Each costs at least an fsync, during
which commits wait for the write lock: a busy broker lets ~100 ms of commits accumulate instead
of checkpointing after each one (at 20 ms, single enqueues ran about a third slower)."""

GUARD_WAIT_S = 0.5
"""How long a checkpoint waits for the write lock; when other writers hold it that long, this
round is skipped (the next commit asks for another)."""

SAFETY_FRAMES = 32768
"""``PRAGMA wal_autocheckpoint`` of the broker's connection: only reached if this thread falls
far behind, after which commits checkpoint inline as SQLite does by default."""

WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""``PRAGMA journal_size_limit``: a WAL grown past this by a burst is truncated when rewound."""


def copy_back(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """One ``PASSIVE`` checkpoint on ``conn``: (busy, WAL frames, frames copied back)."""
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(frames), int(copied)


def presync(wal: Path) -> None:
    """fsync the WAL file, outside the write lock, so that the checkpoint's own sync of it (which
    SQLite always runs before copying pages back) finds little left to write. Only ever adds a
    sync: nothing is lost if it fails, or if a commit appends frames after it. The file is opened
    and closed here: SQLite holds no POSIX lock on the WAL (its locks are on the database file and
    the ``-shm`` file), so closing this descriptor releases none of them."""
    try:
        fd = os.open(wal, os.O_RDONLY)
    except OSError:  # no WAL (yet, or any more): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # best effort: the checkpoint syncs the WAL itself
        logger.debug("fsync of %s failed: %s", wal, exc)
    finally:
        os.close(fd)


class Checkpointer:
    """One daemon thread checkpointing one database's WAL, nudged by the broker's commits.

    The thread and its connection are created on the first :meth:`committed` call.

    Args:
        path: the database file.
        synchronous: the ``PRAGMA synchronous`` statement of the broker's connections.
        name: the thread's name.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        name: str,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._wal = Path(f"{path}-wal")
        self._name = name
        self._pending = threading.Event()  # set by commits not yet checkpointed
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.runs = 0
        """Checkpoints run so far (for tests and debugging)."""
        self.last: tuple[int, int, int] | None = None
        """The last checkpoint's (busy, WAL frames, frames copied back), as SQLite reports it."""
        self.rewinds = 0
        """Times a checkpoint found the WAL shorter than the previous one: it was started over."""
        self.skipped = 0
        """Rounds skipped because other writers held the write lock past :data:`GUARD_WAIT_S`."""

    def committed(self) -> None:
        """Note a committed write transaction (cheap; call after every commit)."""
        if self._pending.is_set():
            return
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._closing.is_set():
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        self._pending.set()

    def close(self) -> None:
        """Run a last checkpoint and stop the thread (idempotent); waits for it to finish."""
        with self._start_lock:
            self._closing.set()
            thread = self._thread
        self._pending.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        conns = self._connect()
        if conns is None:
            return
        conn, guard = conns
        try:
            while True:
                self._pending.wait()
                self._pending.clear()
                if self._closing.is_set():
                    self._checkpoint(conn, guard)
                    return
                self._checkpoint(conn, guard)
                # Let commits accumulate: a checkpoint costs an fsync however little it copies.
                if self._closing.wait(INTERVAL_S):
                    self._checkpoint(conn, guard)
                    return
        finally:
            conn.close()
            guard.close()

    def _connect(self) -> tuple[sqlite3.Connection, sqlite3.Connection] | None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None)
            conn.execute(self._synchronous)
            guard = sqlite3.connect(self._path, timeout=GUARD_WAIT_S, isolation_level=None)
        except sqlite3.Error as exc:
            logger.warning(
                "no background WAL checkpoints for %s (%s); commits checkpoint past %d pages",
                self._path,
                exc,
                SAFETY_FRAMES,
            )
            return None
        return conn, guard

    def _checkpoint(self, conn: sqlite3.Connection, guard: sqlite3.Connection) -> None:
        """Run one checkpoint under the write lock (``PASSIVE`` never waits for a busy lock)."""
        presync(self._wal)
        try:
            guard.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:  # writers held the lock too long: the next commit retries
            self.skipped += 1
            logger.debug("WAL checkpoint of %s put off: %s", self._path, exc)
            return
        try:
            busy, frames, copied = copy_back(conn)
        except sqlite3.Error as exc:  # best effort: the next commit nudges a new attempt
            logger.debug("WAL checkpoint of %s failed: %s", self._path, exc)
            return
        finally:
            guard.execute("ROLLBACK")  # nothing was written: the lock is simply released
        self.runs += 1
        if self.last is not None and 0 <= frames < self.last[1]:
            self.rewinds += 1
        self.last = (busy, frames, copied)
