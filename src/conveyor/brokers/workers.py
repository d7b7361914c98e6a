"""The worker registry and cancel requests: a small protocol beside :class:`Broker`.

Every worker keeps a record of itself in the broker (:class:`WorkerInfo`), refreshed with its
lease heartbeat and removed when it stops cleanly; a record not refreshed within its ``ttl_s``
(the worker was killed, or lost the broker) is no longer listed. The inspector reads the records
(``list_workers``) and asks a worker to stop a running task (``request_cancel``): the request is
stored against the task's current lease, and the worker holding that lease finds it with
``cancel_requested``.

Rules every backend keeps:

* ``register_worker`` replaces the record of that id and sets its expiry to ``now + ttl_s`` by
  the broker's clock; ``list_workers`` never returns a record past its expiry (and may delete
  it), sorted by id.
* ``request_cancel`` is one atomic step: an unknown task raises ``TaskNotFoundError``; a task
  that is not ACTIVE raises ``TaskNotActiveError`` and nothing is stored; an ACTIVE one gets a
  request tied to its current fencing token, so it concerns this attempt only (a later attempt
  of the same task, after recovery, is not cancelled by it). Asking twice is the same as once.
* ``cancel_requested`` reports, for each lease, whether a request names that lease's token.
  Requests of attempts that have ended are dropped at the latest by the next ``request_cancel``
  of their queue, so they never accumulate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from conveyor.errors import BrokerError
from conveyor.message import Lease

__all__ = ["WorkerInfo", "WorkerRegistry", "decode_worker", "encode_worker"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    """One live worker, as its last heartbeat described it.

    Attributes:
        id: unique per worker process run (``host:pid:random``).
        host: the machine's host name.
        pid: the process that runs the tasks.
        queues: queue name to weight, as the worker was started with.
        concurrency: how many tasks it runs at once at most.
        active: ids of the tasks it was running at its last heartbeat.
        started_at: when the worker started (aware UTC).
        last_heartbeat: when the record was last refreshed (aware UTC, broker clock).
        version: the conveyor version the worker runs.
    """

    id: str
    host: str
    pid: int
    queues: Mapping[str, int]
    concurrency: int
    active: tuple[str, ...] = ()
    started_at: datetime
    last_heartbeat: datetime = field(default_factory=lambda: datetime.now(UTC))
    version: str = ""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (times as ISO 8601 strings)."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": dict(self.queues),
            "concurrency": self.concurrency,
            "active": list(self.active),
            "started_at": self.started_at.isoformat(),
            "last_heartbeat": self.last_heartbeat.isoformat(),
            "version": self.version,
        }


def encode_worker(worker: WorkerInfo) -> str:
    """The stored form of a record (JSON; ``last_heartbeat`` is set by the broker on reading)."""
    data = worker.to_dict()
    del data["last_heartbeat"]
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def decode_worker(text: str | bytes, last_heartbeat: float) -> WorkerInfo:
    """A stored record read back, its heartbeat time (epoch seconds) from the broker.

    Raises:
        BrokerError: the record is not one this module wrote.
    """
    try:
        data = json.loads(text)
        return WorkerInfo(
            id=str(data["id"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            queues={str(k): int(v) for k, v in dict(data["queues"]).items()},
            concurrency=int(data["concurrency"]),
            active=tuple(str(t) for t in data["active"]),
            started_at=datetime.fromisoformat(str(data["started_at"])),
            last_heartbeat=datetime.fromtimestamp(last_heartbeat, UTC),
            version=str(data.get("version", "")),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BrokerError(f"unreadable worker record: {exc}") from exc


@runtime_checkable
class WorkerRegistry(Protocol):
    """Worker records and cancel requests; every built-in broker has it (see the module doc)."""

    async def register_worker(self, worker: WorkerInfo, *, ttl_s: float) -> None:
        """Store or refresh ``worker``'s record; it lapses ``ttl_s`` seconds from now."""
        ...

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker's record (clean stop); an unknown id does nothing."""
        ...

    async def list_workers(self) -> list[WorkerInfo]:
        """Every record not past its expiry, sorted by id."""
        ...

    async def request_cancel(self, queue: str, task_id: str) -> None:
        """Ask the worker running the task to cancel this attempt (one atomic step).

        Raises:
            TaskNotFoundError: no such task in ``queue``.
            TaskNotActiveError: the task is not ACTIVE; nothing was stored.
        """
        ...

    async def cancel_requested(self, leases: Sequence[Lease]) -> list[bool]:
        """For each lease, whether a cancel was requested for that very attempt (its token)."""
        ...
