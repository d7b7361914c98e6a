"""HandlerThreadPool: the threads sync handlers run in, with room to abandon a stuck one.

``concurrent.futures.ThreadPoolExecutor`` does not fit: its threads are joined at interpreter exit,
so one sync handler stuck in an endless loop would keep a worker process from ever exiting, and a
thread abandoned after a timeout would keep its slot, starving the tasks after it. Here threads
are daemons, and :meth:`HandlerThreadPool.abandon` lets the pool start a replacement while the
abandoned thread finishes on its own (its outcome ignored), then exits.

The hop to a thread and back is most of what a trivial sync task costs a worker, so it is kept
short: a job goes to the threads through one ``queue.SimpleQueue``, and its outcome comes back
through a mailbox that settles the asyncio future its coroutine awaits (no
``concurrent.futures.Future`` with its condition variable, no ``asyncio.wrap_future`` chain). A
thread wakes the event loop only when no delivery is pending already, so outcomes that arrive
while the loop is busy share one wake-up.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Mailbox:
    """Outcomes on their way from the pool threads to one event loop."""

    __slots__ = ("_outcomes", "_scheduled", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._outcomes: collections.deque[tuple[SyncRun[Any], bool, Any]] = collections.deque()
        self._scheduled = False

    def post(self, job: SyncRun[Any], ok: bool, value: Any) -> None:
        """On a pool thread: queue an outcome, and wake the loop unless a delivery is pending.

        No outcome is left behind: :meth:`_deliver_all` clears the flag before it empties the
        queue, so an outcome appended after its last look finds the flag clear and schedules
        another delivery.
        """
        self._outcomes.append((job, ok, value))
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._deliver_all)
            except RuntimeError:  # the loop is closed: nobody awaits the outcome any more
                return

    def _deliver_all(self) -> None:
        self._scheduled = False
        outcomes = self._outcomes
        while outcomes:
            job, ok, value = outcomes.popleft()
            job._deliver(ok, value)


class SyncRun(Generic[T]):
    """One call handed to :meth:`HandlerThreadPool.run`; await it for the call's outcome.

    Cancelling the coroutine that awaits it ignores the outcome but cannot stop a call that
    already runs: :meth:`cancel` withdraws one no thread took yet, :meth:`done` and
    :meth:`ended` tell whether a running one has returned.
    """

    __slots__ = ("_args", "_claim", "_ended", "_fn", "_future", "_mailbox", "_waiter")

    def __init__(self, mailbox: _Mailbox, fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        self._mailbox = mailbox
        self._future: asyncio.Future[T] = mailbox.loop.create_future()
        self._fn = fn
        self._args = args
        # Whoever pops this one element first owns the call: a pool thread (it runs it) or
        # cancel() (it never runs). list.pop is atomic, so no lock is needed for the race.
        self._claim: list[None] = [None]
        self._ended = False  # set by the thread once the call returned or raised
        self._waiter: asyncio.Future[None] | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._future.__await__()

    def cancel(self) -> bool:
        """Withdraw the call if no thread has taken it yet; True if it will never run."""
        try:
            self._claim.pop()
        except IndexError:
            return False
        return True

    def done(self) -> bool:
        """Whether the call has returned (or raised) on its thread."""
        return self._ended

    def ended(self) -> asyncio.Future[None]:
        """A future settled once the call has returned: how to wait for a running call whose
        awaiting coroutine was cancelled (its outcome is then not delivered)."""
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = self._mailbox.loop.create_future()
            if self._ended:
                waiter.set_result(None)
        return waiter

    def _run(self) -> None:
        """On a pool thread: make the call (unless cancelled first) and send its outcome."""
        try:
            self._claim.pop()
        except IndexError:
            return  # withdrawn by cancel()
        ok = True
        try:
            value: Any = self._fn(*self._args)
        except BaseException as exc:  # delivered to the awaiting coroutine
            ok, value = False, exc
        self._ended = True
        self._mailbox.post(self, ok, value)

    def _deliver(self, ok: bool, value: Any) -> None:
        """On the event loop: settle the awaited future, unless its awaiter was cancelled."""
        future = self._future
        if not future.done():
            if ok:
                future.set_result(value)
            elif isinstance(value, StopIteration):
                # A future refuses StopIteration (it would end the awaiting generator):
                # deliver it as a coroutine would, wrapped in a RuntimeError.
                error = RuntimeError("sync handler raised StopIteration")
                error.__cause__ = value
                future.set_exception(error)
            else:
                future.set_exception(value)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class HandlerThreadPool:
    """A pool of up to ``size`` daemon threads, started on demand.

    Args:
        size: threads that may run jobs at once (the worker's concurrency).
        name: thread name prefix.
    """

    def __init__(self, size: int, *, name: str = "conveyor-handler") -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[SyncRun[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads done with their job and about to wait for the next one
        self._live = 0  # threads started and not exited
        self._excess = 0  # abandoned jobs whose threads must exit once they finish
        self._serial = 0
        self._closed = False
        self._mailbox: _Mailbox | None = None  # the one of the loop that last called run()

    @property
    def abandoned(self) -> int:
        """Threads still running a job whose outcome was abandoned."""
        return self._excess

    def run(self, fn: Callable[..., T], *args: Any) -> SyncRun[T]:
        """Run ``fn(*args)`` on a pool thread; await the returned :class:`SyncRun` for its
        outcome. Call it from the event loop that awaits it.

        Raises:
            RuntimeError: the pool was shut down, or no event loop is running.
        """
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        if mailbox is None or mailbox.loop is not loop:
            mailbox = self._mailbox = _Mailbox(loop)
        job = SyncRun(mailbox, fn, args)
        with self._lock:
            if self._closed:
                raise RuntimeError("handler thread pool is shut down")
            self._jobs.put(job)
            # An idle thread will take the job; otherwise start one if there is room.
            if self._idle > 0:
                self._idle -= 1
            elif self._live - self._excess < self._size:
                self._start_thread()
        return job

    def abandon(self) -> None:
        """Stop counting one running job: its thread exits when the job ends, and a new one
        may start in its place."""
        with self._lock:
            self._excess += 1
            waiting = not self._jobs.empty()
            if waiting and not self._closed and self._live - self._excess < self._size:
                self._start_thread()

    def shutdown(self) -> None:
        """Let idle threads exit; running ones finish their job first. Does not wait."""
        with self._lock:
            self._closed = True
            for _ in range(self._live):
                self._jobs.put(None)

    def _start_thread(self) -> None:
        self._live += 1
        self._serial += 1
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{self._serial}", daemon=True
        )
        thread.start()

    def _work(self) -> None:
        get = self._jobs.get
        while True:
            job = get()
            if job is None:
                with self._lock:
                    self._live -= 1
                return
            job._run()
            del job
            with self._lock:
                if self._excess > 0:
                    # Replaced while it ran (or another thread was): keep the count at ``size``.
                    self._excess -= 1
                    self._live -= 1
                    return
                self._idle += 1
