"""Workflows fired by schedule entries on Redis: recorded with the fire, then created.

A workflow entry's entry lives in the slot of its first step's queue; the workflows it fires
live in their own ids' slots, and their steps' queues in theirs. On Redis Cluster no script
may span those slots, so a fire that both moves the cursor and creates the workflow cannot be
one script. It is two steps, each safe to repeat, the same on a single server and on Cluster:

1. ``schedule_fire.lua`` (the entry's slot): the compare-and-set on the entry's cursor, and in
   the same script, for each fire time, a *pending record* of the workflow to create: its id
   (derived from the entry's name and the fire time, :func:`schedule_workflow_id`), its graph
   and its retention, in ``ns:{q}:swf`` with the time it was recorded in ``ns:{q}:swfq``.
   A stale fire (the entry changed, was paused or removed, or another scheduler fired that time
   first) records nothing.
2. :meth:`RedisScheduleWorkflows._create_pending`: create the workflow with the broker's own
   ``create_workflow`` (an id that exists already is left as it is: the workflow is created at
   most once), then delete the pending record.

The scheduler that fired runs (2) at once. If it dies between the steps, the record stays; every
scheduler's round (``due_schedules``) finds the records older than :data:`PENDING_GRACE_S` and
runs (2) for them. Each fire time therefore gets exactly one workflow:

* at most one fire of a fire time is applied (the cursor's compare-and-set), so at most one
  record is written with that time's id, and creating an id twice stores it once;
* a record is deleted only after its workflow exists, so a crash at any instant leaves either
  the workflow or the record from which any scheduler creates it.

The grace period only keeps a live scheduler and another one's round from creating the same
workflow at once (which would be harmless: the second creation is a no-op).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.redis import keys
from conveyor.brokers.redis.base import RedisBrokerBase
from conveyor.brokers.redis.replies import as_bytes
from conveyor.brokers.redis.schedule_keys import schedule_pending
from conveyor.brokers.workflows import NewWorkflow, WorkflowBroker
from conveyor.errors import ConveyorError, TaskIdConflictError

__all__ = [
    "PENDING_BATCH",
    "PENDING_GRACE_S",
    "RedisScheduleWorkflows",
    "pending_record",
    "workflow_of",
]

logger = logging.getLogger(__name__)

PENDING_GRACE_S = 5.0
"""How old a pending record must be before any scheduler's round creates its workflow (the
scheduler that fired it does so at once, unless it died)."""

PENDING_BATCH = 100
"""The most pending records one round takes from one queue."""


def pending_record(workflow: NewWorkflow) -> bytes:
    """What a pending record stores: ``<retention s>\\n<graph>``."""
    return repr(float(workflow.retention_s)).encode() + b"\n" + workflow.graph


def workflow_of(workflow_id: str, record: bytes) -> NewWorkflow:
    """The workflow a pending record describes.

    Raises:
        PayloadError: the graph is damaged.
        ValueError: the retention is not a finite number.
    """
    head, _, graph = record.partition(b"\n")
    retention = float(head.decode("ascii"))
    if not math.isfinite(retention) or retention < 0:
        raise ValueError(f"bad retention {head!r}")
    parsed = engine.parse_graph(graph)
    return NewWorkflow(
        id=workflow_id,
        graph=graph,
        steps=len(parsed.steps),
        first=tuple(parsed.steps[i].message for i in engine.start(parsed)),
        retention_s=retention,
    )


class RedisScheduleWorkflows(RedisBrokerBase):
    """Mixin of :class:`~conveyor.brokers.redis.RedisBroker`: step (2) above."""

    _pending_grace_s: float = PENDING_GRACE_S

    async def _create_pending(self, queue: str, workflow: NewWorkflow) -> bool:
        """Create a recorded workflow unless it exists, then delete its pending record.

        Returns whether this call created it (``False``: it existed already, made by another
        scheduler finishing the same record, or by an earlier fire of the same time).
        """
        assert isinstance(self, WorkflowBroker)
        record = keys.workflow_keys(self._ns, workflow.id)[0]
        with self._errors():
            existed = bool(await self._client.exists(record))
        created = False
        try:
            # Called even when it exists: on Cluster a creation cut short is finished by this.
            await self.create_workflow(workflow)
            created = not existed
        except TaskIdConflictError:
            pass  # this id's workflow exists already (a single server refuses the second)
        await self._clear_pending(queue, workflow.id)
        return created

    async def _clear_pending(self, queue: str, workflow_id: str) -> None:
        """Delete a pending record: the record first, then its time (a time left alone by a
        crash between is found next round and deleted)."""
        records, times = schedule_pending(self._ns, queue)
        with self._errors():
            await self._client.hdel(records, workflow_id)
            await self._client.zrem(times, workflow_id)

    async def _finish_left_over(self, queue: str, pending: Sequence[Any]) -> None:
        """Create the workflows of the pending records a round found (``pending`` as
        ``schedule_due.lua`` returns it: id, record, id, record, ...)."""
        for n in range(0, len(pending) - 1, 2):
            workflow_id = as_bytes(pending[n]).decode()
            data = pending[n + 1]
            if data is None:  # its record was deleted, its time was not
                await self._clear_pending(queue, workflow_id)
                continue
            try:
                workflow = workflow_of(workflow_id, as_bytes(data))
            except (ConveyorError, ValueError, UnicodeDecodeError) as exc:
                # Never creatable: reported and dropped, so it does not come back every round.
                logger.error("scheduled workflow %s cannot be created: %s", workflow_id, exc)
                await self._clear_pending(queue, workflow_id)
                continue
            if await self._create_pending(queue, workflow):
                logger.info(
                    "scheduled workflow %s created (its scheduler stopped after the fire)",
                    workflow_id,
                    extra={"task_id": workflow_id, "queue": queue},
                )
