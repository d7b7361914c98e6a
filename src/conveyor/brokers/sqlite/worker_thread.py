"""The broker's database thread: runs SQLite work off the event loop, one call at a time.

A plain queue and ``call_soon_threadsafe`` instead of ``loop.run_in_executor``: the round trip
is about half as long (no concurrent.futures.Future to chain), which matters when every enqueue
is one hop.

A caller that may block (a sync ``Client`` or ``Inspector`` driving its private loop, see
:data:`~conveyor.private_loop.caller_may_block`) runs its call inline instead: two thread
wake-ups cost more than a single-row insert. Inline calls and the thread's jobs take one lock,
so the connection is still used by one thread at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.private_loop import caller_may_block

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any], bool]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; its result is dropped
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class DatabaseThread:
    """One daemon thread running submitted callables in order.

    It is a daemon so an unclosed broker never keeps the interpreter from exiting; SQLite's
    journal makes a transaction cut short at exit roll back, as after a crash.

    Args:
        name: the thread's name, for debuggers and ``ps -L``.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False
        self._busy = threading.Lock()  # held while a callable runs, on the thread or inline

    @property
    def lock(self) -> threading.Lock:
        """Held while a callable runs (on the thread or inline): whoever holds it has the
        connection to itself."""
        return self._busy

    async def run(self, fn: Callable[[], T], *, exclusive: bool = True) -> T:
        """Run ``fn`` on the thread and return its result (or raise its exception).

        When :data:`~conveyor.private_loop.caller_may_block` is set, ``fn`` runs in the calling
        thread instead, after any job the thread is running (never concurrently with one).
        ``exclusive=False`` runs it without :attr:`lock`, for a job that waits on a thread
        which may need the lock.

        Raises:
            RuntimeError: the thread was stopped.
        """
        if caller_may_block.get():
            return self.call(fn) if exclusive else self._unless_stopped(fn)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._start_lock:
            if self._stopped:
                raise RuntimeError("database thread stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._jobs.put((loop, future, fn, exclusive))
        return await future

    def acquire_idle(self) -> bool:
        """Take :attr:`lock` if it is free and no job is queued (the caller releases it), so
        that the caller may use the connection in its own thread without waiting behind anyone;
        ``False``, taking nothing, otherwise or once the thread was stopped. A job taken off
        the queue just now runs after the caller."""
        if self._stopped or not self._jobs.empty() or not self._busy.acquire(blocking=False):
            return False
        if self._stopped:
            self._busy.release()
            return False
        return True

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the calling thread, holding :attr:`lock` (blocks until it is free).

        Raises:
            RuntimeError: the thread was stopped.
        """
        with self._busy:
            return self._unless_stopped(fn)

    def _unless_stopped(self, fn: Callable[[], T]) -> T:
        if self._stopped:
            raise RuntimeError("database thread stopped")
        return fn()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, exclusive = job
            # A caller cancelled while queued gets nothing done: better than, say, a claim whose
            # leases nobody will see (those tasks would sit ACTIVE until their lease lapses).
            # Reading the flag from this thread is a benign race: at worst the job runs.
            if future.cancelled():
                continue
            result: Any = None
            error: BaseException | None = None
            try:
                if exclusive:
                    with self._busy:
                        result = fn()
                else:
                    result = fn()
            except Exception as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                loop.call_soon_threadsafe(_settle, future, result, error)
            del job, future, result, error  # do not keep the last result alive while idle

    def stop(self) -> None:
        """Let queued calls finish, then end the thread; later calls raise RuntimeError."""
        with self._start_lock:
            if self._stopped:
                return
            self._stopped = True
            if self._thread is not None:
                self._jobs.put(None)
