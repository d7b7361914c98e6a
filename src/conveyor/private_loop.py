"""A private event loop driven by the caller's thread: how the sync facades call the async core.

``Client`` and ``Inspector`` are thin synchronous wrappers around ``AsyncClient`` and
``AsyncInspector``. Broker connections are bound to the event loop that opened them, and creating
a loop per call (``asyncio.run``) costs far more than a SQLite insert, so each facade owns one
loop for its whole lifetime.

That loop is *not* parked on a background thread: a cross-thread hand-off
(``run_coroutine_threadsafe``) measured ~110 µs per call here, while running the loop in the
calling thread (``run_until_complete``) measured ~30 µs. A lock serialises callers, so a facade
is safe to share between threads. A caller that already runs an event loop in its thread (sync
code called from async code) cannot drive a second loop there, so its calls are carried out on
a helper thread instead, under the same lock.

While it drives a coroutine, the loop sets :data:`caller_may_block`: the caller is blocked on the
call anyway, so code below it (the SQLite broker's database thread) may do blocking work right in
this thread instead of handing it to another thread and waiting to be woken.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import TypeVar

from conveyor.errors import BrokerUnavailableError

T = TypeVar("T")

caller_may_block: ContextVar[bool] = ContextVar("conveyor_caller_may_block", default=False)
"""True in coroutines driven by a :class:`PrivateLoop`: nothing else runs on that loop while the
caller waits, so blocking it (briefly, on local work such as a SQLite transaction) costs no one."""


class PrivateLoop:
    """Runs coroutines to completion on one private event loop, from any thread, one at a time.

    The loop is created on first use, so constructing a facade does no work.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._helper: ThreadPoolExecutor | None = None
        self._closed = False

    def _drive(self, coro: Coroutine[object, object, T]) -> T:
        with self._lock:
            if self._closed:
                coro.close()
                raise BrokerUnavailableError(f"{self._name} is closed")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            # Set before the call so the task running ``coro`` copies it into its context.
            token = caller_may_block.set(True)
            try:
                return self._loop.run_until_complete(coro)
            finally:
                caller_may_block.reset(token)

    def run(self, coro: Coroutine[object, object, T]) -> T:
        """Run ``coro`` on the private loop and return its result (or raise its exception).

        Raises:
            BrokerUnavailableError: the facade is closed (as the async API says once closed).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._drive(coro)
        # Called from async code: this thread's loop is running, so drive ours elsewhere.
        # (This blocks the caller's loop, as any sync I/O call would; use the async API there.)
        with self._lock:
            if self._helper is None:
                self._helper = ThreadPoolExecutor(1, thread_name_prefix=self._name)
            helper = self._helper
        return helper.submit(self._drive, coro).result()

    def close(self) -> None:
        """Cancel leftover tasks and close the loop. Idempotent; ``run`` fails afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, helper = self._loop, self._helper
            self._loop = self._helper = None
        if helper is not None:
            helper.shutdown(wait=True)
        if loop is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            _shut(loop)
            return
        closer = threading.Thread(target=_shut, args=(loop,), name=self._name)
        closer.start()
        closer.join()


def _shut(loop: asyncio.AbstractEventLoop) -> None:
    # Tasks left behind by an interrupted call (KeyboardInterrupt mid-enqueue) are cancelled
    # and awaited so the loop closes without "Task was destroyed but it is pending".
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()
