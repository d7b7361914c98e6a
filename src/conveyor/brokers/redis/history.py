"""Attempt history on the Redis broker (see :mod:`conveyor.brokers.history`).

The records are the ``history`` field of the task hash (``keys.task``): a JSON list written by
``fail_task`` in ``scripts/lib.lua``, which every script recording a failed attempt runs (fail,
recover, wf_settle). In the task's slot, so the write is part of that script on a Cluster too,
and every script that deletes the record (DEL of the hash) deletes its history with it. A read
is one ``HGET``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.brokers.history import decode_history
from conveyor.brokers.redis.base import RedisBrokerBase
from conveyor.brokers.redis.replies import as_bytes
from conveyor.message import AttemptRecord


class HistoryMixin(RedisBrokerBase):
    """The :class:`~conveyor.brokers.history.AttemptHistory` method of ``RedisBroker``."""

    async def load_history(self, queue: str, task_id: str) -> tuple[AttemptRecord, ...]:
        """The task's failed attempts, oldest first."""
        tkey = self._keys(queue).task_prefix + task_id
        with self._errors():
            raw = await self._client.hget(tkey, "history")
        return decode_history(None if raw is None else as_bytes(raw))


if TYPE_CHECKING:
    from conveyor.brokers.history import AttemptHistory
    from conveyor.brokers.redis.broker import RedisBroker

    def _conforms(b: RedisBroker) -> AttemptHistory:
        return b
