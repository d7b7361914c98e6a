"""WAL checkpoints on a background thread, off the commit path.

With ``synchronous=NORMAL`` a commit only appends to the WAL; the fsyncs happen when a checkpoint
copies the WAL back into the database file. SQLite's automatic checkpoint runs inside the commit
that crosses its threshold (1000 pages), so every few hundred single-task enqueues one of them
waits for the fsync of megabytes of WAL: about half the cost of a single enqueue, measured.

Here the broker's connection checkpoints automatically only past a large safety threshold, and a
:class:`Checkpointer` thread with its own connection copies the WAL back while the broker keeps
committing:

* after a write, at most every :data:`INTERVAL_S`, it runs a ``PASSIVE`` checkpoint: it never
  waits for and never blocks a writer or reader, in this process or any other;
* a WAL is rewound from its start only by a write that finds it fully copied back, which a
  steady stream of commits never does (each lands while the last checkpoint runs). Once the WAL
  holds :data:`RESET_FRAMES` frames, the checkpointer therefore runs one more ``PASSIVE``
  checkpoint while holding the broker's own lock (this process's writes wait; it only has the
  few frames committed since the previous one to copy), so the next write rewinds the WAL;
* if writers in other processes keep the WAL from being rewound that way, past
  :data:`RESTART_FRAMES` it runs a ``RESTART`` checkpoint, which waits for every writer and
  reader and guarantees the rewind. It blocks every writer while it waits, so it waits at most
  :data:`RESTART_WAIT_S`; after a failed one (a long read transaction pins the WAL, which no
  checkpoint can get past) the next attempt is put off, longer each time up to
  :data:`RESTART_BACKOFF_MAX_S`;
* the broker's connection keeps SQLite's automatic checkpoint at :data:`SAFETY_FRAMES`, so the
  WAL stays bounded even if this thread cannot run or keep up;
* on close it runs a last ``PASSIVE`` checkpoint, so a closed broker leaves little WAL behind.

Checkpoints are SQLite's own crash-safe mechanism whichever connection runs them: a process
killed in the middle of one leaves a WAL that the next opener recovers. The checkpointing
connection uses the broker's ``synchronous`` setting, so the WAL is fsynced before any page is
copied back, exactly as in an automatic checkpoint.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

INTERVAL_S = 0.02
"""The shortest time between two background checkpoints: each costs at least an fsync, so a busy
broker lets ~20 ms of commits accumulate instead of checkpointing after each one."""

RESET_FRAMES = 4096
"""WAL frames (pages) past which the checkpointer makes sure the next write rewinds the WAL."""

RESTART_FRAMES = 4 * RESET_FRAMES
"""WAL frames past which it forces the rewind across processes with a ``RESTART`` checkpoint."""

RESTART_WAIT_S = 0.02
"""The busy timeout of a ``RESTART`` checkpoint: how long it may hold up every writer."""

RESTART_BACKOFF_S = 0.1
"""The pause before retrying a failed ``RESTART`` checkpoint, doubled after each failure..."""

RESTART_BACKOFF_MAX_S = 5.0
"""...up to this."""

SAFETY_FRAMES = 8 * RESET_FRAMES
"""``PRAGMA wal_autocheckpoint`` of the broker's connection: only reached if this thread falls
far behind, after which commits checkpoint inline as SQLite does by default."""

WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""``PRAGMA journal_size_limit``: a WAL grown past this by a burst is truncated when rewound."""

_PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"
_RESTART = "PRAGMA wal_checkpoint(RESTART)"


class Checkpointer:
    """One daemon thread checkpointing one database's WAL, nudged by the broker's commits.

    The thread and its connection are created on the first :meth:`committed` call.

    Args:
        path: the database file.
        synchronous: the ``PRAGMA synchronous`` statement of the broker's connections.
        writes: the lock every write on the broker's connection holds; held around the
            checkpoint that lets the WAL be rewound.
        name: the thread's name.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        writes: threading.Lock,
        name: str,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._restart_after = 0.0  # monotonic time before which no RESTART is tried
        self._backoff_s = RESTART_BACKOFF_S
        self._writes = writes
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
        conn = self._connect()
        if conn is None:
            return
        try:
            while True:
                self._pending.wait()
                self._pending.clear()
                if self._closing.is_set():
                    self._checkpoint(conn, _PASSIVE)
                    return
                self._maintain(conn)
                # Let commits accumulate: a checkpoint costs an fsync however little it copies.
                if self._closing.wait(INTERVAL_S):
                    self._checkpoint(conn, _PASSIVE)
                    return
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection | None:
        try:
            conn = sqlite3.connect(self._path, timeout=RESTART_WAIT_S, isolation_level=None)
            conn.execute(self._synchronous)
        except sqlite3.Error as exc:
            logger.warning(
                "no background WAL checkpoints for %s (%s); commits checkpoint past %d pages",
                self._path,
                exc,
                SAFETY_FRAMES,
            )
            return None
        return conn

    def _maintain(self, conn: sqlite3.Connection) -> None:
        frames = self._checkpoint(conn, _PASSIVE)
        if frames >= RESTART_FRAMES and time.monotonic() >= self._restart_after:
            with self._writes:
                self._checkpoint(conn, _RESTART)
            if self.last is not None and self.last[0] == 0:
                self._backoff_s = RESTART_BACKOFF_S
            else:
                self._restart_after = time.monotonic() + self._backoff_s
                self._backoff_s = min(2 * self._backoff_s, RESTART_BACKOFF_MAX_S)
        elif frames >= RESET_FRAMES:
            with self._writes:
                self._checkpoint(conn, _PASSIVE)

    def _checkpoint(self, conn: sqlite3.Connection, statement: str) -> int:
        """Run one checkpoint; return the WAL's size in frames (0 when unknown)."""
        try:
            busy, frames, copied = conn.execute(statement).fetchone()
        except sqlite3.Error as exc:  # best effort: the next commit nudges a new attempt
            logger.debug("WAL checkpoint of %s failed: %s", self._path, exc)
            return 0
        self.runs += 1
        if self.last is not None and 0 <= frames < self.last[1]:
            self.rewinds += 1
        self.last = (busy, frames, copied)
        return max(int(frames), 0)
