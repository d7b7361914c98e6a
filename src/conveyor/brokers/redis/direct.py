"""Script calls straight on redis-py connections the broker keeps between calls.

redis-py's ``execute_command`` costs about 30 to 35 µs of CPU a call beyond the round trip itself
(measured with redis-py 8.1: taking the connection from the pool and giving it back, with
their per-call metrics hooks and locking, the retry wrapper and the command dispatch). That is
a sixth of a single enqueue and a sizeable share of every claim and completion. So the broker
keeps the connections it has used on a free list of its own and talks to them through
redis-py's public connection calls (``send_command``, ``read_response``): redis-py still
connects (with the broker's connect-only retry), encodes, parses and drops a connection on any
error, exactly as under ``execute_command``.

Before reusing a connection it makes the check the pool makes: a connection with unread data
or closed by the server (a Redis restart) is reconnected before anything is sent, so the
first command after a restart does not fail. Nothing is ever sent twice. redis-py's periodic
health check (a PING once the client's ``health_check_interval`` has passed) is asked for
only when it is due: the test is made here, so the usual call costs no coroutine for it.

Two more costs are cut on the way. Commands are packed by hiredis directly (what redis-py
does when hiredis is installed, without its per-argument checks). And an asyncio connection
with a socket timeout wraps every send in ``asyncio.wait_for`` (a new task and a loop turn on
Python 3.11) and every read in a timeout of its own, about 15 µs of CPU a call together: while
the broker holds a connection it lifts that timeout and bounds the whole call, send and reply,
by the same length, which raises redis-py's ``TimeoutError`` as before. A connection given back
to the pool gets its timeout back. The bound is not an ``asyncio.timeout`` per call (a timer
handle armed and cancelled each time) but an entry in one table of deadlines
(:class:`Deadlines`), which a single timer looks at: every call has the same timeout, so the
oldest entry is always the next to expire, and the timer fires about once per timeout period.

Standalone and Sentinel clients only; Cluster routes each command by slot and keeps
``execute_command``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from hiredis import pack_command
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Connections kept on the broker's own list; a burst beyond this gives the extra ones back to the
# pool, where the broker's other commands can use them (the two would otherwise each grow to
# their own peak). A worker's steady script calls (claim, complete, renew) need two or three.
KEEP_IDLE = 4

# redis-py 8 renamed the asyncio check (the old name warns); 6.x and 7.x have only the old one.
_ASYNC_CHECK = "can_read" if hasattr(AbstractConnection, "can_read") else "can_read_destructive"


def _packed(command: tuple[Any, ...]) -> list[bytes]:
    """``command`` in Redis' wire format, as ``send_packed_command`` takes it (a list of bytes)."""
    return [pack_command(command)]


def _health_due(conn: AbstractConnection) -> bool:
    """Whether ``send_packed_command`` must check ``conn``'s health (a PING) before sending.

    The same test redis-py's ``check_health`` makes, made here so that the usual call, with no
    check due, costs no coroutine; a due check is still redis-py's own.
    """
    interval = conn.health_check_interval
    return bool(interval) and asyncio.get_running_loop().time() > conn.next_health_check


class Deadlines:
    """Bounds on calls of one length, kept by one timer: what ``asyncio.timeout`` does per call.

    :meth:`enter` records the calling task's deadline; a call still running at its deadline has
    its task cancelled, and :meth:`leave` turns that cancellation into ``TimeoutError`` (as
    ``asyncio.timeout`` does: only when the task was not also cancelled from elsewhere). Calls
    made on another event loop than the first one's are kept apart, each loop with its table
    and timer.
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None  # the one _timer runs on
        # Task -> (deadline, its cancellation requests on entry). Entered in time order with
        # the same timeout, so the first entry expires first. A task makes one call at a time.
        self._entries: dict[asyncio.Task[Any], tuple[float, int]] = {}
        self._expired: dict[asyncio.Task[Any], int] = {}  # cancelled by the timer
        self._timer: asyncio.TimerHandle | None = None
        self._other_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
            weakref.WeakKeyDictionary()
        )

    def _on(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        """The table of calls made on ``loop``."""
        if loop is self._loop:
            return self
        if self._loop is None:
            self._loop = loop
            return self
        other = self._other_loops.get(loop)
        if other is None:
            other = self._other_loops[loop] = Deadlines(self._timeout)
            other._loop = loop
        return other

    def enter(self) -> asyncio.Task[Any]:
        """Start the calling task's bound; call :meth:`leave` when its call ends, however."""
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        table = self._on(loop)
        deadline = loop.time() + self._timeout
        table._entries[task] = (deadline, task.cancelling())
        if table._timer is None:
            table._timer = loop.call_at(deadline, table._on_timer)
        return task

    def leave(self, task: asyncio.Task[Any], exc: BaseException | None) -> None:
        """End ``task``'s bound; its call raised ``exc`` (``None``: it returned).

        Raises:
            TimeoutError: the bound ran out, and ``exc`` is the cancellation it caused (not
                one requested from elsewhere as well).
        """
        table = self._on(task.get_loop())
        if table._entries.pop(task, None) is not None:
            return  # in time
        cancelling = table._expired.pop(task, None)
        if cancelling is None:
            return
        # The bound's cancellation is taken back in any case, as asyncio.timeout does.
        if task.uncancel() <= cancelling and isinstance(exc, asyncio.CancelledError):
            raise TimeoutError from exc

    def _on_timer(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        entries = self._entries
        while entries:
            task = next(iter(entries))
            deadline, cancelling = entries[task]
            if deadline > now:
                self._timer = loop.call_at(deadline, self._on_timer)
                return
            del entries[task]
            if not task.done():
                self._expired[task] = cancelling
                task.cancel()
        # Nothing left to bound: the next call arms the timer again.


class AsyncLines:
    """Connections of one asyncio client kept checked out for direct command calls."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._pool = client.connection_pool
        self._idle: list[AbstractConnection] = []
        # The pool's socket timeout, applied here to a whole call instead (see the module doc).
        self._timeout: float | None = self._pool.connection_kwargs.get("socket_timeout")
        self._deadlines = None if self._timeout is None else Deadlines(self._timeout)

    async def call(self, *command: Any) -> Any:
        """Send ``command`` and return its reply (a Redis error reply raises ``ResponseError``).

        Raises redis-py's ``TimeoutError`` when the reply takes longer than the client's socket
        timeout (the connection is then dropped, as redis-py drops it).
        """
        [reply] = await self._exchange(_packed(command), 1)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def call_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and return their replies in order: one round trip,
        as a pipeline without a transaction, without the cost of redis-py's pipeline object.

        Every reply is read before an error reply raises its ``ResponseError`` (the connection
        stays clean); a timeout bounds the whole call, as :meth:`call`'s.
        """
        replies = await self.call_each(commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def call_each(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """:meth:`call_many`, but an error reply is returned in its command's place (a
        ``ResponseError``) instead of raised: commands that stand alone (scripts, each atomic
        on its own) each get their own outcome.
        """
        return await self._exchange([pack_command(c) for c in commands], len(commands))

    async def _exchange(self, packed: list[bytes], count: int) -> list[Any]:
        """One write of ``packed`` on a kept connection and its ``count`` replies, an error
        reply in its place; the whole bounded by the socket timeout."""
        conn = await self._take()
        bound = None if self._deadlines is None else self._deadlines.enter()
        try:
            try:
                await conn.send_packed_command(packed, check_health=_health_due(conn))
                replies: list[Any] = []
                for _ in range(count):
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
            except BaseException as exc:
                if bound is not None:
                    self._unbind(bound, exc)
                raise
            if bound is not None:
                self._unbind(bound, None)
            return replies
        finally:
            # On a failed send or read redis-py has already disconnected it; it reconnects when
            # next used. An error reply leaves it clean.
            if len(self._idle) < KEEP_IDLE:
                self._idle.append(conn)
            else:
                await self._give(conn)

    def _unbind(self, task: asyncio.Task[Any], exc: BaseException | None) -> None:
        """End ``task``'s bound (its call raised ``exc``); redis-py's ``TimeoutError`` if it
        ran out."""
        assert self._deadlines is not None
        try:
            self._deadlines.leave(task, exc)
        except TimeoutError as timeout:  # our bound ran out
            # Cancelled mid-send or mid-read, redis-py has dropped the connection already.
            raise RedisTimeoutError("Timeout waiting for a reply from Redis") from timeout

    async def _take(self) -> AbstractConnection:
        if not self._idle:
            conn: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
            conn.socket_timeout = None  # call() bounds the call instead
            return conn
        conn = self._idle.pop()
        try:
            if conn.is_connected:
                try:
                    stale = await getattr(conn, _ASYNC_CHECK)()
                except (RedisConnectionError, OSError):
                    stale = True
                if stale:
                    await conn.disconnect()
        except BaseException:  # cancelled mid-check: keep the connection (it reconnects)
            self._idle.append(conn)
            raise
        return conn

    async def _give(self, conn: AbstractConnection) -> None:
        """Back to the pool, with the socket timeout its other users expect."""
        conn.socket_timeout = self._timeout
        await self._pool.release(conn)

    async def close(self) -> None:
        """Give the connections back to the pool (before the client closes it)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._give(conn)


class SyncLines:
    """:class:`AsyncLines` for a synchronous client; safe to share between threads."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._idle: list[redis.Connection] = []

    def call(self, *command: Any) -> Any:
        """Send ``command`` and return its reply (a Redis error reply raises ``ResponseError``)."""
        conn = self._take()
        try:
            conn.send_packed_command(_packed(command))  # type: ignore[no-untyped-call]
            return conn.read_response()
        finally:
            if len(self._idle) < KEEP_IDLE:  # as in AsyncLines.call
                self._idle.append(conn)
            else:
                self._pool.release(conn)

    def _take(self) -> redis.Connection:
        try:
            conn = self._idle.pop()  # atomic: each thread gets its own connection
        except IndexError:
            fresh: redis.Connection = self._pool.get_connection()
            return fresh
        try:
            # On a dropped connection this reconnects first, which can fail (a timeout, a refused
            # SELECT): the connection goes back on the list, not astray.
            stale = conn.can_read()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            stale = True
        except BaseException:
            self._idle.append(conn)
            raise
        if stale:
            conn.disconnect()  # type: ignore[no-untyped-call]
        return conn

    def close(self) -> None:
        """Give the connections back to the pool (before the client closes it)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            self._pool.release(conn)
