"""Every Redis key name the Redis broker uses, built in one place.

Layout (``ns`` is the namespace, default ``conveyor``; ``q`` a queue name)::

    ns:queues                      SET    registry of queue names (cross-queue, own slot)
    ns:waiter:<hex>                LIST   one broker object's private wake-up (cancelling its
                                          wait pushes a token; deleted right after)
    ns:claimed:{q}:<hex>:<n>       STRING a claim receipt of one broker object, for a batch whose
                                          first queue is q: the claim's id and leases, expiring
                                          with them (a claim whose reply was lost is given back
                                          from it); <n> keeps claims in flight at once apart
    ns:{q}:pending                 ZSET   ready task ids, score = ready time (FIFO)
    ns:{q}:scheduled               ZSET   task ids waiting for process_at, score = due time
    ns:{q}:retry                   ZSET   failed task ids waiting to retry, score = due time
    ns:{q}:active                  ZSET   leased task ids, score = lease expiry
    ns:{q}:archived                ZSET   dead task ids, score = archived-at time
    ns:{q}:completed               ZSET   retained results, score = completed-at time
    ns:{q}:expiry                  ZSET   retained results, score = end of retention
    ns:{q}:seq                     STRING fencing-token counter (never reset, so a token never
                                          repeats, even for a task deleted and re-created)
    ns:{q}:wake                    LIST   wake-up tokens for idle workers (BLPOP), capped
    ns:{q}:paused                  STRING present while the queue is paused
    ns:{q}:stats                   HASH   p:<utc day> / f:<utc day> processed and failed counts
    ns:{q}:t:<id>                  HASH   one task record
    ns:{q}:r:<id>                  LIST   result wake-up for client.wait (one token at most),
                                          pushed only when a waiter flagged the record
    ns:{q}:cancels                 HASH   cancel requests: task id -> the token of the attempt
    ns:{~workers}:records          HASH   live workers: id -> "<beat µs> <JSON record>"
    ns:{~workers}:expiry           ZSET   live workers, score = when the record lapses (µs)
    ns:{q}:u:<unique key>          STRING unique lock holding the task id, expiring
    ns:wf:{w}                      HASH   one workflow record (state, graph JSON, version...)
    ns:wf:{w}:steps                HASH   its steps: s:<i> state, r:<i> result, e:<i> error
    ns:wf:{w}:wake                 LIST   wake-up tokens for clients waiting on the workflow
    ns:wf:{w}:outbox               SET    Cluster only: steps to enqueue (indices), drained
    ns:workflows                   ZSET   every workflow id, score = created-at time
    ns:workflows:live              SET    ids of workflows not yet finished
    ns:workflows:expiry            ZSET   finished workflow ids, score = end of retention
    ns:{q}:limit                   STRING the queue's length limit, "<max> <overflow>"
    ns:{q}:concurrency             STRING the queue's concurrency limit
    ns:{q}:slotwait                HASH   type -> "<limit> <running count>" for the types that
                                          tasks of the queue are held for (a slot; not on
                                          Cluster)
    ns:{q}:held:<type>             ZSET   tasks held (SCHEDULED) for a slot of their type,
                                          score = their pending score before
    ns:concurrency                 HASH   task type -> concurrency limit
    ns:run:<type>                  STRING how many tasks started under the type's
                                          concurrency limit are ACTIVE (each names it in its
                                          record's 'run' field until it leaves ACTIVE); not on
                                          Cluster (its permits instead)
    ns:rates                       HASH   task type -> "<count> <period µs>" (rate limits)
    ns:bucket:<type>               ZSET   a type's rate-limit tokens still out, one entry per
                                          claim, "<claim id>:<tokens>", score = µs taken at
                                          (back one period later); on Cluster in the type's slot
    ns:tokens:<type>               STRING how many tokens the bucket holds out (the sum over
                                          its entries)
    ns:type:{<type>}:permits       ZSET   Redis Cluster: the type's ACTIVE tasks started under
                                          its concurrency limit, "<task id>:<token>", score =
                                          the lease's expiry (µs); in the type's own slot
    ns:type:{<type>}:bucket        ZSET   Redis Cluster: the type's rate bucket (as
                                          ns:bucket:<type>), in the type's slot
    ns:type:{<type>}:tokens        STRING Redis Cluster: its count of tokens out
    ns:type:{<type>}:waiting       HASH   Redis Cluster: queues with tasks held for a permit of
                                          the type -> until when (µs) they may be

All scores are server times in integer microseconds since the epoch (exact in a double, and
fine enough that "never early" needs no rounding slack).

A task type's Cluster keys carry the hash tag ``{<type>}`` (after ``ns:type:``): its limits
live in one slot of their own, whatever queues its tasks are in.

Every key of a queue carries the hash tag ``{q}``, so the whole queue lives in one Redis Cluster
slot and one Lua script can touch all of it. Names are injective: the namespace and queue names
cannot contain ``{`` or ``}`` (see :data:`conveyor.message.NAME_PATTERN`), so the first ``{...}``
pair is always the queue, and the fixed suffixes never start with ``t:`` or ``u:``. Every key
starts with ``ns:`` so ``SCAN MATCH ns:*`` finds all of a namespace's keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.message import validate_name

__all__ = [
    "QUEUE_KEY_NAMES",
    "QueueKeys",
    "bucket_out_prefix",
    "bucket_prefix",
    "cancels",
    "claim_receipt",
    "concurrency_limits",
    "held_for_slot",
    "queue_concurrency",
    "queue_keys",
    "queue_limit",
    "rate_limits",
    "registry",
    "running_prefix",
    "slot_waits",
    "task",
    "type_keys",
    "unique_lock",
    "waiter",
    "worker_keys",
]

QUEUE_KEY_NAMES = (
    "pending",
    "scheduled",
    "retry",
    "active",
    "archived",
    "completed",
    "expiry",
    "seq",
    "wake",
    "paused",
    "stats",
)
"""Fixed per-queue key suffixes, in the order scripts receive them in KEYS."""


def registry(namespace: str) -> str:
    """The set of all queue names in ``namespace``."""
    return f"{namespace}:queues"


def waiter(namespace: str, token: str) -> str:
    """A broker object's private wake list; ``token`` is unique to the object (hex)."""
    return f"{namespace}:waiter:{token}"


def claim_receipt(namespace: str, queue: str, token: str, slot: int) -> str:
    """A claim receipt of one broker object for batches led by ``queue`` (in that queue's
    Cluster slot); ``token`` is unique to the object (hex). ``slot`` (0, 1, ...) keeps claims
    in flight at the same time apart: each holds its own until its reply comes (or, lost, until
    it is given back), and sequential claims reuse slot 0."""
    return f"{namespace}:claimed:{{{queue}}}:{token}:{slot}"


def worker_keys(namespace: str) -> tuple[str, str]:
    """The worker registry's record hash and expiry set, in one slot of their own.

    ``~`` cannot start a queue name, so the hash tag ``{~workers}`` never names a queue's slot
    and neither key can be mistaken for a queue's.
    """
    return f"{namespace}:{{~workers}}:records", f"{namespace}:{{~workers}}:expiry"


def cancels(namespace: str, queue: str) -> str:
    """The cancel requests of ``queue``'s active tasks (in the queue's slot)."""
    return f"{queue_prefix(namespace, queue)}cancels"


def rate_limits(namespace: str) -> str:
    """The hash of every task type's rate limit."""
    return f"{namespace}:rates"


def bucket_prefix(namespace: str) -> str:
    """The prefix of the token buckets on a standalone server (``prefix + task type``)."""
    return f"{namespace}:bucket:"


def bucket_out_prefix(namespace: str) -> str:
    """The prefix of the buckets' counts of tokens out (``prefix + task type``)."""
    return f"{namespace}:tokens:"


def concurrency_limits(namespace: str) -> str:
    """The hash of every task type's concurrency limit."""
    return f"{namespace}:concurrency"


def running_prefix(namespace: str) -> str:
    """The prefix of the running counts on a standalone server (``prefix + task type``)."""
    return f"{namespace}:run:"


def type_keys(namespace: str, task_type: str) -> list[str]:
    """Redis Cluster: a task type's limit keys, in one slot of their own (``type_permit.lua``'s
    KEYS): its permits, its rate bucket, the bucket's count of tokens out, and the queues whose
    tasks wait for a permit."""
    prefix = f"{namespace}:type:{{{task_type}}}:"
    return [f"{prefix}permits", f"{prefix}bucket", f"{prefix}tokens", f"{prefix}waiting"]


def queue_concurrency(namespace: str, queue: str) -> str:
    """A queue's concurrency limit (scripts build it as the queue prefix .. ``concurrency``)."""
    return f"{queue_prefix(namespace, queue)}concurrency"


def held_for_slot(namespace: str, queue: str, task_type: str) -> str:
    """Tasks of ``queue`` held for a slot of ``task_type`` (scripts: queue prefix .. held:)."""
    return f"{queue_prefix(namespace, queue)}held:{task_type}"


def slot_waits(namespace: str, queue: str) -> str:
    """The types that tasks of ``queue`` are held for (scripts: queue prefix .. slotwait)."""
    return f"{queue_prefix(namespace, queue)}slotwait"


def queue_limit(namespace: str, queue: str) -> str:
    """A queue's length limit (scripts build it as the queue prefix .. ``limit``)."""
    return f"{queue_prefix(namespace, queue)}limit"


def queue_prefix(namespace: str, queue: str) -> str:
    """The prefix shared by every key of one queue, hash tag included."""
    return f"{namespace}:{{{queue}}}:"


def task(namespace: str, queue: str, task_id: str) -> str:
    """The hash holding one task record (scripts build it as task prefix .. id)."""
    return f"{queue_prefix(namespace, queue)}t:{task_id}"


def result_wake(namespace: str, queue: str, task_id: str) -> str:
    """The list a waiter on the task's result blocks on (scripts: task prefix's queue + r:id)."""
    return f"{queue_prefix(namespace, queue)}r:{task_id}"


def unique_lock(namespace: str, queue: str, unique_key: str) -> str:
    """The unique lock of ``unique_key`` in ``queue`` (scripts build it as lock prefix .. key)."""
    return f"{queue_prefix(namespace, queue)}u:{unique_key}"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Every key of one queue, in the block layout the Lua scripts take in KEYS.

    ``block`` is the fixed keys (:data:`QUEUE_KEY_NAMES` order) followed by the task-record prefix
    and the unique-lock prefix, all in the queue's slot.
    """

    queue: str
    pending: str
    scheduled: str
    retry: str
    active: str
    archived: str
    completed: str
    expiry: str
    seq: str
    wake: str
    paused: str
    stats: str
    task_prefix: str
    unique_prefix: str

    @property
    def block(self) -> tuple[str, ...]:
        """The keys in script order (13 entries)."""
        return (
            self.pending,
            self.scheduled,
            self.retry,
            self.active,
            self.archived,
            self.completed,
            self.expiry,
            self.seq,
            self.wake,
            self.paused,
            self.stats,
            self.task_prefix,
            self.unique_prefix,
        )


BLOCK_SIZE = len(QUEUE_KEY_NAMES) + 2


def queue_keys(namespace: str, queue: str) -> QueueKeys:
    """All keys of ``queue`` in ``namespace``.

    Raises:
        InvalidNameError: the queue name breaks the naming rule.
    """
    validate_name(queue, what="queue name")
    prefix = queue_prefix(namespace, queue)
    fixed = {name: prefix + name for name in QUEUE_KEY_NAMES}
    return QueueKeys(
        queue=queue,
        task_prefix=task(namespace, queue, ""),
        unique_prefix=unique_lock(namespace, queue, ""),
        **fixed,
    )


def workflow_prefix(namespace: str) -> str:
    """What every workflow record's key starts with (the record is this, then ``{<id>}``)."""
    return f"{namespace}:wf:"


def workflow_keys(namespace: str, workflow_id: str) -> tuple[str, str, str]:
    """A workflow's record, steps and wake list, sharing the hash tag of its id."""
    record = f"{workflow_prefix(namespace)}{{{workflow_id}}}"
    return record, f"{record}:steps", f"{record}:wake"


def workflow_outbox(namespace: str, workflow_id: str) -> str:
    """Redis Cluster only: a workflow's outbox, the steps recorded ready but not yet enqueued."""
    return f"{namespace}:wf:{{{workflow_id}}}:outbox"


def workflow_index(namespace: str) -> tuple[str, str, str]:
    """The workflow index (all, by creation), the live set and the expiry index."""
    return f"{namespace}:workflows", f"{namespace}:workflows:live", f"{namespace}:workflows:expiry"
