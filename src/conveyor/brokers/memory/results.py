"""Waiting on the memory broker: a future per waiter, keyed by what it waits on, set when that ends.

``wait_task`` waits on a task's result (keyed by queue and task id); ``wait_workflow`` uses the
same keyed waiters for a workflow (keyed by its id), woken only when the workflow finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable
from typing import TYPE_CHECKING, TypeVar

from conveyor.brokers.results import DONE_STATES
from conveyor.message import TaskInfo

if TYPE_CHECKING:
    from conveyor.brokers.memory.state import _State

__all__ = ["KeyedWaiters", "MemoryResults", "ResultWaiters", "wake_waiters"]

K = TypeVar("K", bound=Hashable)

Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]
KeyedWaiters = dict[K, list[Waiter]]
"""What is waited on -> the futures of the calls waiting on it (kept under the broker's lock)."""

ResultWaiters = KeyedWaiters[tuple[str, str]]
"""(queue, task id) -> the futures of the calls waiting on that task."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def wake_waiters(waiters: KeyedWaiters[K], key: K) -> None:
    """Wake every call waiting on ``key`` (under the broker's lock; a dict miss when none)."""
    for loop, future in waiters.pop(key, ()):
        with contextlib.suppress(RuntimeError):  # that waiter's loop has closed
            loop.call_soon_threadsafe(_wake, future)


def add_waiter(waiters: KeyedWaiters[K], key: K, entry: Waiter) -> None:
    """Register ``entry`` as waiting on ``key`` (under the broker's lock)."""
    waiters.setdefault(key, []).append(entry)


def drop_waiter(waiters: KeyedWaiters[K], key: K, entry: Waiter) -> None:
    """Forget ``entry`` once its call stopped waiting (under the broker's lock)."""
    found = waiters.get(key)
    if found is not None and entry in found:
        found.remove(entry)
        if not found:
            del waiters[key]


class MemoryResults:
    """``wait_task`` of :class:`~conveyor.brokers.memory.MemoryBroker` (a mixin)."""

    if TYPE_CHECKING:  # provided by MemoryBroker
        _state: _State

        def _locked(self) -> contextlib.AbstractContextManager[_State]: ...
        async def get_task(self, queue: str, task_id: str) -> TaskInfo: ...

    async def wait_task(self, queue: str, task_id: str, timeout_s: float) -> TaskInfo:
        """The task once it ended, or as it is after ``timeout_s`` (woken when it ends)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            future: asyncio.Future[None] = loop.create_future()
            entry = (loop, future)
            # Interest first, then the read, under one lock: an end between them still wakes.
            with self._locked() as s:
                add_waiter(s.result_waiters, (queue, task_id), entry)
            try:
                info = await self.get_task(queue, task_id)
                remaining = deadline - loop.time()
                if info.state in DONE_STATES or remaining <= 0:
                    return info
                await asyncio.wait([future], timeout=remaining)
            finally:
                with self._state.lock:
                    drop_waiter(s.result_waiters, (queue, task_id), entry)
