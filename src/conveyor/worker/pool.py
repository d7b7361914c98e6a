"""HandlerThreadPool: the threads sync handlers run in, with room to abandon a stuck one.

``concurrent.futures.ThreadPoolExecutor`` does not fit: its threads are joined at interpreter exit,
so one sync handler stuck in an endless loop would keep a worker process from ever exiting, and a
thread abandoned after a timeout would keep its slot, starving the tasks after it. Here threads
are daemons, and :meth:`HandlerThreadPool.abandon` lets the pool start a replacement while the
abandoned thread finishes on its own (its outcome ignored), then exits.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class HandlerThreadPool:
    """A pool of up to ``size`` daemon threads, started on demand.

    Args:
        size: threads that may run jobs at once (the worker's concurrency).
        name: thread name prefix.
    """

    def __init__(self, size: int, *, name: str = "conveyor-handler") -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Semaphore(0)
        self._live = 0  # threads started and not exited
        self._excess = 0  # abandoned jobs whose threads must exit once they finish
        self._serial = 0
        self._closed = False

    @property
    def abandoned(self) -> int:
        """Threads still running a job whose outcome was abandoned."""
        return self._excess

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a pool thread; the returned future holds its outcome.

        Raises:
            RuntimeError: the pool was shut down.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("handler thread pool is shut down")
            self._jobs.put((future, fn, args))
            # An idle thread will take the job; otherwise start one if there is room.
            if not self._idle.acquire(blocking=False) and self._live - self._excess < self._size:
                self._start_thread()
        return future

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
        while True:
            job = self._jobs.get()
            if job is None:
                with self._lock:
                    self._live -= 1
                return
            future, fn, args = job
            del job
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:  # delivered to the awaiting coroutine
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args
            with self._lock:
                if self._excess > 0:
                    # Replaced while it ran (or another thread was): keep the count at ``size``.
                    self._excess -= 1
                    self._live -= 1
                    return
            self._idle.release()
