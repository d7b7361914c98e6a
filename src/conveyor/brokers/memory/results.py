"""Waiting for one task's result on the memory broker: a future per waiter, set when it ends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from conveyor.brokers.results import DONE_STATES
from conveyor.message import TaskInfo

if TYPE_CHECKING:
    from conveyor.brokers.memory.broker import _State

__all__ = ["MemoryResults", "ResultWaiters", "wake_result_waiters"]

ResultWaiters = dict[
    tuple[str, str], list[tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]]
]
"""(queue, task id) -> the futures of the calls waiting on that task."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def wake_result_waiters(waiters: ResultWaiters, queue: str, task_id: str) -> None:
    """Wake every call waiting on the task (under the broker's lock; a dict miss when none)."""
    for loop, future in waiters.pop((queue, task_id), ()):
        with contextlib.suppress(RuntimeError):  # that waiter's loop has closed
            loop.call_soon_threadsafe(_wake, future)


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
                s.result_waiters.setdefault((queue, task_id), []).append(entry)
            try:
                info = await self.get_task(queue, task_id)
                remaining = deadline - loop.time()
                if info.state in DONE_STATES or remaining <= 0:
                    return info
                await asyncio.wait([future], timeout=remaining)
            finally:
                with self._state.lock:
                    found = s.result_waiters.get((queue, task_id))
                    if found is not None and entry in found:
                        found.remove(entry)
                        if not found:
                            del s.result_waiters[(queue, task_id)]
