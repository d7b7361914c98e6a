"""WorkerStats: what one server has done since it started."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WorkerStats"]


@dataclass(slots=True)
class WorkerStats:
    """Counters of one server's attempts and their outcomes since it started.

    ``Server.stats`` returns a copy, so the numbers do not change under the caller.

    Attributes:
        claimed: tasks claimed (eager continuations included).
        continued: workflow steps leased to this server by the settlement of the step before
            them (an eager continuation), run without a claim.
        succeeded: attempts whose completion the broker accepted.
        failed: failed attempts (the handler raised, timed out or hit its deadline; the payload
            was unreadable).
        retried: failed attempts recorded as RETRY.
        archived: failed attempts recorded as ARCHIVED.
        released: unfinished tasks given back at shutdown (no failure counted).
        lease_lost: attempts whose lease was lost (refused renewal, completion, retry or archive).
        abandoned_threads: sync handlers abandoned after a timeout, lost lease or shutdown.
        broker_errors: broker calls that failed (each is retried or left to lease recovery).
        recovered: tasks of lost workers recovered by this server's recoverer.
        purged: expired results deleted by this server's janitor.
    """

    claimed: int = 0
    continued: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    archived: int = 0
    released: int = 0
    lease_lost: int = 0
    abandoned_threads: int = 0
    broker_errors: int = 0
    recovered: int = 0
    purged: int = 0
