"""Waiting for one task's result on Redis: a flag on the record, a wake list beside it.

``result_watch.lua`` sets ``waited`` on the task's record and returns its state in one script;
``complete.lua`` (and ``fail_task`` in lib.lua, for an archive) push one token to
``ns:{q}:r:<id>`` when the record carries that flag; the waiter sleeps in ``BLPOP`` on it and
deletes it when it stops waiting (no expiry: the ACL's command list has none). Both keys share
the queue's hash tag, so it works on Cluster too. Completions nobody waits for read one more
field in the HMGET they already make.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.brokers.redis import keys
from conveyor.brokers.redis.base import raise_if_cancelled
from conveyor.brokers.results import DONE_STATES
from conveyor.errors import TaskNotFoundError
from conveyor.message import TaskInfo

if TYPE_CHECKING:
    from conveyor.brokers.redis.base import Client

__all__ = ["RedisResults"]

# A waiter re-reads the task at least this often, in case a wake-up was lost (a failover, or
# an end the scripts do not signal, such as a delete): a safety net, not a poll.
_RECHECK_S = 1.0


class RedisResults:
    """``wait_task`` of :class:`~conveyor.brokers.redis.RedisBroker` (a mixin)."""

    if TYPE_CHECKING:  # provided by RedisBrokerBase
        _ns: str
        _client: Client

        async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any: ...
        async def get_task(self, queue: str, task_id: str) -> TaskInfo: ...

    async def wait_task(self, queue: str, task_id: str, timeout_s: float) -> TaskInfo:
        """The task once it ended, or as it is after ``timeout_s`` (woken by its end)."""
        deadline = time.monotonic() + timeout_s
        record = keys.task(self._ns, queue, task_id)
        wake = keys.result_wake(self._ns, queue, task_id)
        try:
            return await self._wait(queue, task_id, record, wake, deadline)
        finally:
            await self._client.delete(wake)  # at most one token, left by an end after we woke

    async def _wait(
        self, queue: str, task_id: str, record: str, wake: str, deadline: float
    ) -> TaskInfo:
        while True:
            state = await self._run("result_watch", [record], [])
            if state is None:
                raise TaskNotFoundError(
                    f"no task {task_id!r} in queue {queue!r}", task_id=task_id, queue=queue
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0 or state in (b"completed", b"archived", "completed", "archived"):
                info = await self.get_task(queue, task_id)
                if info.state in DONE_STATES or remaining <= 0:
                    return info
            await self._client.blpop([wake], timeout=min(max(remaining, 0.01), _RECHECK_S))
            raise_if_cancelled()
