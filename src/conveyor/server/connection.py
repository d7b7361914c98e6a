"""One client socket as an ``asyncio.Protocol``: request lines in, replies out.

asyncio's streams cost more than the requests they carry: every line read under a timeout
(``asyncio.wait_for``) is a new task and a timer on Python 3.11, and ``readuntil`` is a
coroutine with its own bookkeeping. Here the protocol splits the bytes it receives into lines
as they arrive, and the session's task awaits a future only when no complete line is queued.
The idle timeout is one timer per connection, moved on lazily: it fires at most once per
timeout period and re-arms itself while lines keep coming.

A line is capped at ``max_line_bytes`` (plus its newline): once the queued lines are read, a
longer one raises :class:`LineTooLongError` (the rest is not read). A client that sends ahead
(pipelines) is paused when more than twice the cap is queued unread, as asyncio's streams do.
Once the client shuts its side down (EOF), queued lines are still served and replies can still
be written; then :meth:`Connection.line` returns ``None``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import Any


class LineTooLongError(Exception):
    """A request line went past the limit without a newline."""


class Connection(asyncio.Protocol):
    """A client connection: :meth:`line` reads a request, :meth:`send` writes a reply.

    Args:
        max_line_bytes: the longest line accepted, without its newline.
        on_open: called with the connection once the socket is connected (TLS done).
    """

    def __init__(
        self, *, max_line_bytes: int, on_open: Callable[[Connection], None] | None = None
    ) -> None:
        self._max = max_line_bytes
        self._on_open = on_open
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._partial = b""
        self._lines: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes in _lines
        self._too_long = False
        self._eof = False
        self._lost = False
        self._over_ssl = False
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio subclass
        self._over_ssl = transport.get_extra_info("sslcontext") is not None
        if self._on_open is not None:
            self._on_open(self)

    def data_received(self, data: bytes) -> None:
        if self._too_long:
            return  # nothing after an overlong line is read
        if self._partial:
            data = self._partial + data
        start, limit = 0, self._max + 1
        while True:
            end = data.find(b"\n", start) + 1
            if end <= 0:
                break
            if end - start > limit:
                self._too_long = True
                break
            self._lines.append(data[start:end])
            self._queued += end - start
            start = end
        if self._too_long or len(data) - start > limit:
            self._too_long = True
            self._partial = b""
            self._pause_reading()
        else:
            self._partial = data[start:] if start else data
            if self._queued + len(self._partial) > 2 * limit:
                self._pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep the socket open for the replies still to come (TLS cannot half-close).
        return not self._over_ssl

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reading -------------------------------------------------------------------------------

    async def line(self, timeout_s: float) -> bytes | None:
        """The next line (with its newline), or ``None`` once the client has closed its side.

        Raises:
            TimeoutError: nothing complete arrived within ``timeout_s``.
            LineTooLongError: the next line is longer than the cap (the rest is not read).
        """
        deadline = None
        while True:
            if self._lines:
                line = self._lines.popleft()
                self._queued -= len(line)
                if self._reading_paused and not self._too_long and self._queued <= self._max + 1:
                    self._reading_paused = False
                    if self.transport is not None and not self._lost:
                        self.transport.resume_reading()
                return line
            if self._too_long:
                raise LineTooLongError
            if self._eof:
                return None
            if deadline is None:
                deadline = self._loop.time() + timeout_s
            self._deadline = deadline
            if self._timer is None or self._timer_at > deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_at = deadline
                self._timer = self._loop.call_at(deadline, self._on_timer)
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting: the next wait arms the timer again
        if self._loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._timer_at = self._deadline
            self._timer = self._loop.call_at(self._deadline, self._on_timer)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._lost:
            self._reading_paused = True
            with contextlib.suppress(RuntimeError):  # already closing
                self.transport.pause_reading()

    # -- writing -------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Write ``data``; wait only while the client is not reading what was sent before.

        Raises:
            ConnectionResetError: the connection is gone.
        """
        if self.write(data):
            await self.drain()

    def write(self, data: bytes) -> bool:
        """Write ``data`` without waiting (a reply costs no coroutine); ``True`` when the client
        is not reading what was sent: then :meth:`drain` before writing more.

        Raises:
            ConnectionResetError: the connection is gone.
        """
        if self._lost or self.transport is None:
            raise ConnectionResetError("connection lost")
        self.transport.write(data)
        return self._writing_paused

    async def drain(self) -> None:
        """Wait while the client is not reading what was sent before.

        Raises:
            ConnectionResetError: the connection is gone.
        """
        if self._writing_paused:
            if self._lost:
                raise ConnectionResetError("connection lost")
            if self._drain_waiter is None:
                self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info (``peername``, ``sslcontext``, ...)."""
        return default if self.transport is None else self.transport.get_extra_info(name, default)

    async def aclose(self) -> None:
        """Close the socket and wait until it is closed."""
        if self.transport is not None:
            self.transport.close()
            await asyncio.shield(self._closed)
