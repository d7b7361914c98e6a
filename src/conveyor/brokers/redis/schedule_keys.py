"""The Redis key names of schedule entries (the rest of the layout is in ``keys.py``)::

    ns:schedules                   HASH   entry name -> the queue its tasks go to (own slot):
                                          how entries are found and listed
    ns:schedules:workflow-queues   SET    the queues whose entries have fired workflows (own
                                          slot): where pending workflows are looked for; a
                                          queue leaves it once no entry of it exists and
                                          none of its workflows is pending (standalone only)
    ns:{q}:s:<name>                HASH   one entry whose tasks go to queue q: definition,
                                          cursor ('next', µs), revision, paused flag, last fire
    ns:{q}:sdue                    ZSET   the unpaused entries of queue q, score = cursor (µs)
    ns:{q}:swf                     HASH   workflows fired by entries of queue q, not yet
                                          created: workflow id -> '<retention s>\n<graph>'
    ns:{q}:swfq                    ZSET   the same workflow ids, score = when fired (µs)

An entry lives in the Cluster slot of the queue its tasks go to, so the fire script checks and
moves the cursor and enqueues the tasks in that queue in one atomic step, on Cluster too. The
name index lives in a slot of its own: it is written before an entry is stored and cleared
after it is removed, so a crash between leaves at most an index entry naming nothing (skipped).
A workflow entry's fire records the workflows to create in ``swf``/``swfq`` of the same slot
(the workflows themselves live in their ids' slots; see ``schedules.py``). Suffixes ``s:``,
``sdue``, ``swf`` and ``swfq`` cannot collide with the task keys' (``t:``, ``u:``) or the fixed
names of ``keys.py``.
"""

from __future__ import annotations

from conveyor.brokers.redis.keys import queue_prefix

__all__ = [
    "schedule_due",
    "schedule_index",
    "schedule_pending",
    "schedule_prefix",
    "schedule_record",
    "schedule_workflow_queues",
]


def schedule_index(namespace: str) -> str:
    """The hash of every entry name and its queue."""
    return f"{namespace}:schedules"


def schedule_workflow_queues(namespace: str) -> str:
    """The set of queues whose entries have fired workflows. Written before each such fire, so
    a pending workflow is found even after its entry was removed; a queue is taken out when no
    entry of it exists and none of its workflows is pending (``schedule_forget.lua``; on a
    standalone server only, so on Cluster it keeps every such queue)."""
    return f"{namespace}:schedules:workflow-queues"


def schedule_prefix(namespace: str, queue: str) -> str:
    """The prefix of the entry records of ``queue`` (scripts build a record key from it)."""
    return f"{queue_prefix(namespace, queue)}s:"


def schedule_record(namespace: str, queue: str, name: str) -> str:
    """The hash holding entry ``name``, whose tasks go to ``queue``."""
    return schedule_prefix(namespace, queue) + name


def schedule_due(namespace: str, queue: str) -> str:
    """The unpaused entries of ``queue`` by cursor."""
    return f"{queue_prefix(namespace, queue)}sdue"


def schedule_pending(namespace: str, queue: str) -> tuple[str, str]:
    """The workflows fired by the entries of ``queue`` and not yet created: their records
    (hash) and the times they were fired (sorted set)."""
    prefix = queue_prefix(namespace, queue)
    return f"{prefix}swf", f"{prefix}swfq"
