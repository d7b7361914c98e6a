"""The broker protocol: the one seam between conveyor and its storage backends.

The client, worker, inspector, CLI and dashboard talk to storage only through :class:`Broker`.
Every backend (memory, sqlite, redis) implements it and passes the shared conformance suite in
``tests/conformance/``, so behaviour is the same everywhere. Methods are named after the state
transitions of a task (see docs/architecture.md for the lifecycle):

    enqueue ─► PENDING | SCHEDULED
    claim:   PENDING (and due SCHEDULED/RETRY) ─► ACTIVE, minting a lease with a fencing token
    complete / retry / archive / release:
             ACTIVE ─► COMPLETED (or deleted) / RETRY / ARCHIVED / PENDING
    recover_expired: ACTIVE with a lapsed lease ─► RETRY (or ARCHIVED when out of retries)

Rules every backend keeps:

* Each transition is one atomic step (one transaction, one Lua script). A task is ACTIVE if and
  only if it holds a lease; terminal states (COMPLETED, ARCHIVED) never revert except by an
  explicit inspector ``run_task``.
* Time for leases, scheduling and recovery comes from the broker's clock, never the caller's.
* Scheduled and retry tasks are never claimed before they are due. Within one queue, tasks are
  claimed in the order they became ready (FIFO); a released task goes back to the front.
* Stale fencing tokens are refused: ``complete`` reports ``False``, the single-task transitions
  raise :class:`~conveyor.errors.LeaseLostError`.
* Backend library exceptions are mapped to :class:`~conveyor.errors.BrokerError` subclasses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from conveyor.message import Completion, Lease, QueueStats, TaskInfo, TaskMessage, TaskState

LEASE_EXPIRED_ERROR = "lease expired (worker lost)"
"""The error recorded on a task recovered from a lapsed lease."""

MAX_CRASH_ATTEMPTS = 3
"""Default ``max_crashes`` of ``recover_expired``: leases lost before a task is archived."""


def crash_limit_error(max_crashes: int) -> str:
    """The error recorded on a task archived because its leases lapsed ``max_crashes`` times."""
    return f"{LEASE_EXPIRED_ERROR} {max_crashes} times: archived as a possible poison task"


def recover_spread(task_id: str, crash: int) -> float:
    """The factor, in [0.5, 1), on the delay of a task recovered for the ``crash``-th time.

    Tasks recovered together (every task of a dead worker) would otherwise all be due at the
    same instant: claimed together again, and a task that kills its worker would take the same
    neighbours down with it at every crash. The factor is derived from the task id and the crash
    number (the first 32 bits of the SHA-1 of ``"<id>:<crash>"``) rather than drawn at random, so
    every backend, including the Redis scripts (``redis.sha1hex``), spreads a task the same way.
    It is below 1 so that ``recover_delay`` stays the bound on how long a recovered task waits
    (the delivery contract's grace before redelivery).
    """
    digest = hashlib.sha1(f"{task_id}:{crash}".encode(), usedforsecurity=False).hexdigest()
    return 0.5 + int(digest[:8], 16) / 2**33


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a backend can do, checked up front instead of failing at run time."""

    shared_across_processes: bool
    """Several processes (and machines, for a network broker) can share the same queues."""
    persistent: bool
    """Acknowledged tasks survive a restart of the process that enqueued them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerInfo:
    """Describes a connected broker for start-up banners and the inspector."""

    backend: str
    """Short backend name: ``memory``, ``sqlite``, ``redis``."""
    location: str
    """Where the data lives, with any password redacted."""
    durability: str
    """One sentence on what an acknowledged enqueue survives with the current settings."""
    warnings: tuple[str, ...] = ()
    """Problems found with the broker's configuration (for example an evicting Redis)."""


@runtime_checkable
class Broker(Protocol):
    """Storage for tasks. All methods are coroutines and safe to call concurrently."""

    @property
    def capabilities(self) -> Capabilities:
        """What this backend supports."""
        ...

    async def describe(self) -> BrokerInfo:
        """Check the connection and report backend, location, durability and warnings."""
        ...

    async def close(self) -> None:
        """Release connections and files. The broker is unusable afterwards."""
        ...

    # -- producing -----------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """Store tasks, all or nothing, in one transaction or round trip where the backend allows.

        A message with ``process_at`` or ``process_in_s`` in the future is SCHEDULED, any other is
        PENDING. Redis Cluster is atomic per queue only (documented limitation).

        Raises:
            TaskIdConflictError: a task with the same id exists in that queue (in any state).
            DuplicateTaskError: a live unique lock holds the message's ``unique_key``.
        """
        ...

    # -- consuming -----------------------------------------------------------------------------

    async def claim(self, queues: Sequence[str], *, limit: int, lease_s: float) -> list[Lease]:
        """Claim up to ``limit`` ready tasks, trying ``queues`` in the given order.

        Due SCHEDULED and RETRY tasks count as ready. Paused queues are skipped. Each claimed task
        becomes ACTIVE with a lease expiring ``lease_s`` seconds from now (broker time) and a new
        fencing token. A stored record that cannot be decoded is archived with a reason, not
        returned. Returns an empty list when nothing is ready.
        """
        ...

    async def wait_for_tasks(self, queues: Sequence[str], timeout_s: float) -> None:
        """Return soon after a task may have become ready in ``queues``, or after ``timeout_s``.

        Spurious returns are allowed; callers claim and wait again. This is how an idle worker
        starts new work within milliseconds without busy-polling.
        """
        ...

    async def extend_leases(self, leases: Sequence[Lease], lease_s: float) -> list[bool]:
        """Push each lease's expiry to ``lease_s`` seconds from now; ``False`` marks a lost one."""
        ...

    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        """Record successful attempts; ``False`` for each whose lease was lost (refused).

        A task with a retention period becomes COMPLETED with its result; others are deleted.
        The unique lock is released. Each completion and its ``successors`` are one atomic step.
        """
        ...

    async def retry(self, lease: Lease, *, error: str, delay_s: float) -> None:
        """Record a failed attempt: the task waits in RETRY for ``delay_s`` seconds.

        Raises:
            LeaseLostError: the lease was lost; nothing changed.
        """
        ...

    async def archive(self, lease: Lease, *, error: str) -> None:
        """Record a failed attempt and move the task to ARCHIVED (dead) with ``error``.

        Raises:
            LeaseLostError: the lease was lost; nothing changed.
        """
        ...

    async def release(self, lease: Lease) -> None:
        """Give an unfinished task back (graceful shutdown): PENDING at the front, no failure.

        Raises:
            LeaseLostError: the lease was lost; nothing changed.
        """
        ...

    async def recover_expired(
        self, *, delay_s: float, max_crashes: int = MAX_CRASH_ATTEMPTS
    ) -> int:
        """Recover ACTIVE tasks whose lease lapsed (their worker died or stalled).

        Each counts as a failed attempt with the error ``"lease expired (worker lost)"``: it goes
        to RETRY due in ``delay_s`` seconds times :func:`recover_spread` of its id and crash
        count (so between half of ``delay_s`` and ``delay_s``), or to ARCHIVED when it
        has no retries left. Each also counts as a crash: a task recovered for the
        ``max_crashes``-th time is ARCHIVED with :func:`crash_limit_error` whatever retries it
        has left, so a task that kills its worker is dead after ``max_crashes`` claims rather
        than ``max_retry + 1``. Returns how many tasks were recovered.
        """
        ...

    async def purge_expired(self) -> int:
        """Delete COMPLETED tasks past retention and expired unique locks; return the count.

        Also drops the daily processed/failed totals older than :data:`DAILY_TOTALS_KEPT_DAYS`
        days, so a long-lived queue's statistics do not grow for ever.
        """
        ...

    # -- inspecting ----------------------------------------------------------------------------

    async def list_queues(self) -> list[str]:
        """Names of all queues that have ever held a task or been paused, sorted."""
        ...

    async def queue_stats(self, queue: str) -> QueueStats:
        """Counts by state, paused flag and today's processed/failed totals for ``queue``."""
        ...

    async def list_tasks(
        self, queue: str, state: TaskState, *, offset: int = 0, limit: int = 100
    ) -> list[TaskInfo]:
        """A page of tasks in ``state``, in the order they will run (or ran)."""
        ...

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task.

        Raises:
            TaskNotFoundError: no such task in ``queue``.
        """
        ...

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not ACTIVE (an active task must finish or be recovered first).

        Raises:
            TaskNotFoundError: no such task, or it is ACTIVE.
        """
        ...

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a SCHEDULED, RETRY or ARCHIVED task PENDING now.

        Raises:
            TaskNotFoundError: no such task in a state that can be run.
        """
        ...

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a PENDING, SCHEDULED or RETRY task to ARCHIVED.

        Raises:
            TaskNotFoundError: no such task in a state that can be archived.
        """
        ...

    async def delete_tasks(self, queue: str, state: TaskState) -> int:
        """Delete every task in ``state`` (not ACTIVE); return how many."""
        ...

    async def run_tasks(self, queue: str, state: TaskState) -> int:
        """Make every SCHEDULED, RETRY or ARCHIVED task in ``state`` PENDING; return how many."""
        ...

    async def archive_tasks(self, queue: str, state: TaskState) -> int:
        """Archive every PENDING, SCHEDULED or RETRY task in ``state``; return how many."""
        ...

    async def pause_queue(self, queue: str) -> None:
        """Stop workers from claiming from ``queue``; enqueueing still works."""
        ...

    async def unpause_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        ...

    async def delete_queue(self, queue: str, *, force: bool) -> None:
        """Remove ``queue`` entirely, in one atomic step.

        A backend may first empty a big queue in batches, for a forced delete, to keep a shared
        server responsive (Redis: pause, then delete 500 tasks per step); it must still refuse
        an ACTIVE task before deleting anything, and the last step stays atomic.

        Deletes its tasks in every state, their unique locks, its daily totals, pause flag and
        wake-ups, and its registry entry (``list_queues`` no longer names it). A later enqueue
        to the same name starts a fresh queue with zero counts. The fencing-token counter is
        kept (broker-wide on memory and SQLite, the queue's ``seq`` key on Redis), so a token
        still never repeats for a task re-created under the same id. Deleting a queue that does
        not exist does nothing, as ``queue_stats`` reports an unknown queue as empty.

        Raises:
            QueueNotEmptyError: ``force`` is false and the queue holds a task in any state.
            QueueInUseError: ``force`` is true and a task is ACTIVE (a worker holds its lease).
        """
        ...


@runtime_checkable
class BlockingEnqueue(Protocol):
    """Optional, for brokers that can store tasks from plain synchronous code.

    The sync :class:`~conveyor.Client` uses it when the broker has it, so a web request thread
    pays one plain round trip per enqueue instead of driving an event loop. Same semantics,
    outcome and errors as :meth:`Broker.enqueue`; safe to call from several threads at once.
    """

    def enqueue_blocking(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """:meth:`Broker.enqueue`, blocking the calling thread until it is stored."""
        ...


@runtime_checkable
class WaitAndClaim(Protocol):
    """Optional, for brokers that can claim the moment an idle wait ends, in the same step.

    An idle worker uses it instead of :meth:`Broker.wait_for_tasks` then :meth:`Broker.claim`,
    which cuts a round trip from enqueue-to-start (Redis runs the claim on the server as soon
    as the wake-up arrives).
    """

    async def wait_and_claim(
        self, queues: Sequence[str], *, limit: int, lease_s: float, timeout_s: float
    ) -> list[Lease]:
        """Wait as :meth:`Broker.wait_for_tasks` does, then claim as :meth:`Broker.claim` does.

        Cancelling it gives back anything its claim took: the tasks are ready again at once,
        with no attempt counted. A broker error after the claim ran leaves its tasks to come
        back when their leases lapse, as for a claim whose reply is lost.
        """
        ...


DAILY_TOTALS_KEPT_DAYS = 90
"""How many days of processed/failed totals a broker keeps (``purge_expired`` drops older)."""
