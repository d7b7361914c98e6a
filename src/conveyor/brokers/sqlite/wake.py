"""Cross-process wake-ups for the SQLite broker over Unix datagram sockets.

SQLite has no LISTEN/NOTIFY, so idle workers would otherwise poll. Instead each broker that waits
for tasks binds a datagram socket in a directory next to the database (``<db>.wake/``). After a
commit that makes work ready, a producer sends one byte to every socket there; a listener thread
in the waiting process receives it and wakes that broker's waiters. Everything is best effort:
a lost datagram costs at most one fallback poll interval, never a task.

Sockets whose owner died refuse datagrams (``ECONNREFUSED``) and are unlinked by the next sender.
Unix socket paths are limited to ~108 bytes, so a long directory path is reached through
``/proc/self/fd/<directory fd>/`` (Linux), which keeps every address short.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

_SUFFIX = ".sock"
_MAX_ADDRESS = 100  # sun_path is 108 bytes on Linux; keep a margin for the terminating NUL
# A cached listing is trusted only when the directory's mtime was this far before the listing:
# file timestamps are coarse (a kernel tick), so a socket bound in the same tick as a listing
# could leave the mtime unchanged.
_MTIME_MARGIN_NS = 50_000_000


def wake_directory(database: Path) -> Path:
    """The directory holding the wake sockets of the database at ``database``."""
    return database.with_name(database.name + ".wake")


class _Directory:
    """An open handle on the wake directory that yields short socket addresses."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._ino = -1

    def address(self, name: str) -> str:
        full = str(self.path / name)
        if len(full.encode()) <= _MAX_ADDRESS:
            return full
        return f"/proc/self/fd/{self._dir_fd()}/{name}"

    def _dir_fd(self) -> int:
        st = os.stat(self.path)
        if self._fd is None or st.st_ino != self._ino:
            self.close()
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            self._ino = st.st_ino
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class WakeSender:
    """Sends a wake-up byte to every waiting broker on the same database (not thread-safe).

    Args:
        directory: the wake directory (see :func:`wake_directory`).
        own_name: returns this broker's own socket name, which is skipped (its waiters are
            woken directly), or ``None`` when it has none.
    """

    def __init__(self, directory: Path, own_name: Callable[[], str | None]) -> None:
        self._dir = _Directory(directory)
        self._own_name = own_name
        self._sock: socket.socket | None = None
        self._names: list[str] = []
        self._seen: tuple[int, int] | None = None  # (inode, mtime_ns) of the cached listing

    def _listing(self) -> list[str]:
        try:
            st = os.stat(self._dir.path)
        except FileNotFoundError:
            return []  # nobody has ever waited on this database
        key = (st.st_ino, st.st_mtime_ns)
        if key != self._seen:
            listed_at = time.time_ns()
            self._names = [n for n in os.listdir(self._dir.path) if n.endswith(_SUFFIX)]
            trusted = st.st_mtime_ns < listed_at - _MTIME_MARGIN_NS
            self._seen = key if trusted else None
        return self._names

    def notify(self) -> None:
        """Send one byte to every other waiter's socket; never raises, never blocks."""
        try:
            names = self._listing()
            if not names:
                return
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            own = self._own_name()
            for name in names:
                if name != own:
                    self._send(name)
        except OSError as exc:  # wake-ups are an optimisation; the waiters' poll covers a loss
            logger.debug("wake-up not sent: %s", exc)

    def _send(self, name: str) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(b"\x01", self._dir.address(name))
        except BlockingIOError:
            pass  # its buffer is full of wake-ups already
        except (ConnectionRefusedError, FileNotFoundError):
            # The owner died without cleaning up: remove its socket so nobody sends there again.
            with contextlib.suppress(OSError):
                os.unlink(self._dir.path / name)
            self._seen = None

    def close(self) -> None:
        """Release the sending socket and directory handle."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._dir.close()


class WakeListener:
    """Binds this broker's wake socket and calls ``on_wake`` from a thread for each burst.

    Args:
        directory: the wake directory; created if missing.
        on_wake: called (from the listener thread) after one or more wake-up bytes arrive.
    """

    def __init__(self, directory: Path, on_wake: Callable[[], None]) -> None:
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}{_SUFFIX}"
        self._dir = _Directory(directory)
        self._on_wake = on_wake
        self._closing = False
        directory.mkdir(exist_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(self._dir.address(self.name))
        except OSError:
            self._sock.close()
            self._dir.close()
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"conveyor-sqlite-wake-{self.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._sock.recv(16)
                # Drain the burst so many producers' bytes cost one wake-up.
                with contextlib.suppress(BlockingIOError):
                    while True:
                        self._sock.recv(16, socket.MSG_DONTWAIT)
            except OSError:
                return
            if self._closing:
                return
            self._on_wake()

    def close(self) -> None:
        """Stop the thread, close the socket and unlink its file."""
        if self._closing:
            return
        self._closing = True
        # Wake the blocked recv() with a byte of our own; closing the socket would not.
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke,
        ):
            poke.setblocking(False)
            poke.sendto(b"\x00", self._dir.address(self.name))
        self._thread.join(timeout=2.0)
        with contextlib.suppress(OSError):
            os.unlink(self._dir.path / self.name)
        self._sock.close()
        self._dir.close()
