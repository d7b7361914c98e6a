"""WorkerConfig: every option of a :class:`~conveyor.worker.server.Server`, frozen and validated."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from conveyor.backoff import RetryDelay, default_retry_delay
from conveyor.brokers.protocol import MAX_CRASH_ATTEMPTS
from conveyor.errors import ConfigError
from conveyor.message import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_QUEUE, validate_name
from conveyor.middleware import ErrorHandler

__all__ = ["WorkerConfig", "default_concurrency", "normalize_queues", "seconds"]


DEFAULT_CONCURRENCY = 10


def default_concurrency() -> int:
    """The default number of tasks run at once: 10, or the CPU count where that is more.

    Tasks mostly wait (on the network, on a database), so a worker should hold more of them
    than it has CPUs; 10 is a common default among task queues, and the bench shows a Redis
    worker at concurrency 2 draining at well under half its rate at 10 or more.
    """
    return max(DEFAULT_CONCURRENCY, os.cpu_count() or 1)


def seconds(value: float | timedelta, *, what: str) -> float:
    """Convert a duration option to seconds.

    Raises:
        ConfigError: ``value`` is not a number or timedelta, or is negative.
    """
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise ConfigError(f"{what} must be seconds or a timedelta, got {value!r}")
    if result < 0 or result != result:
        raise ConfigError(f"{what} must not be negative, got {value!r}")
    return result


def normalize_queues(
    queues: Mapping[str, int] | Sequence[str] | str | None,
) -> tuple[tuple[str, int], ...]:
    """Turn the ``queues`` option into ``((name, weight), ...)``, in the order given.

    ``None`` means ``{"default": 1}``; a sequence of names gives each weight 1; a single string is
    one queue.

    Raises:
        ConfigError: no queues, a bad name, a duplicate, or a weight that is not a positive int.
    """
    if queues is None:
        return ((DEFAULT_QUEUE, 1),)
    if isinstance(queues, str):
        queues = [queues]
    pairs = list(queues.items()) if isinstance(queues, Mapping) else [(q, 1) for q in queues]
    if not pairs:
        raise ConfigError("queues must name at least one queue")
    seen: set[str] = set()
    for name, weight in pairs:
        validate_name(name, what="queue name")
        if name in seen:
            raise ConfigError(f"queue {name!r} is listed twice")
        seen.add(name)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise ConfigError(f"weight of queue {name!r} must be a positive int, got {weight!r}")
    return tuple(pairs)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """The options of one worker server, in seconds where they are durations.

    Attributes:
        concurrency: how many tasks run at once (also the size of the sync-handler thread pool).
        queues: ``(name, weight)`` pairs, in the order given.
        strict_priority: claim from the heaviest queue first instead of in weighted random order.
        retry_delay: how long a failed task waits before its next attempt.
        error_handler: called as ``error_handler(ctx, task, exc)`` on each failed attempt.
        shutdown_timeout_s: how long a graceful shutdown waits for running handlers.
        sync_cancel_grace_s: how long an interrupted sync handler has to notice
            ``ctx.cancelled`` and return before its thread is abandoned.
        lease_s: how long a claim lasts without renewal.
        max_payload_bytes: larger stored payloads are archived unread.
        renew_interval_s: how often leases are extended; ``None`` means a third of the lease.
        recover_interval_s: how often expired leases (of dead workers) are recovered.
        recover_delay_s: how long a recovered task waits in RETRY before it runs again (spread
            per task by a factor between 0.5 and 1: ``protocol.recover_spread``).
        max_crash_attempts: lost leases after which a recovered task is archived (a task that
            kills its worker), whatever retries it has left.
        janitor_interval_s: how often expired results and unique locks are purged.
        poll_interval_s: longest idle wait before claiming again, should a wake-up be missed.
        completion_batch_size: most completions recorded in one broker call.
        completion_linger_s: how long a completion may wait for others to share its call.
        release_grace_s: after cancelling handlers at shutdown, how long to wait for them to end.
    """

    concurrency: int = field(default_factory=default_concurrency)
    queues: tuple[tuple[str, int], ...] = ((DEFAULT_QUEUE, 1),)
    strict_priority: bool = False
    retry_delay: RetryDelay = default_retry_delay
    error_handler: ErrorHandler | None = None
    shutdown_timeout_s: float = 8.0
    sync_cancel_grace_s: float = 1.0
    lease_s: float = 30.0
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    renew_interval_s: float | None = None
    recover_interval_s: float = 5.0
    recover_delay_s: float = 1.0
    max_crash_attempts: int = MAX_CRASH_ATTEMPTS
    janitor_interval_s: float = 10.0
    poll_interval_s: float = 1.0
    completion_batch_size: int = 256
    completion_linger_s: float = 0.001
    release_grace_s: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigError(f"concurrency must be a positive int, got {self.concurrency!r}")
        object.__setattr__(self, "queues", normalize_queues(dict(self.queues)))
        if not callable(self.retry_delay):
            raise ConfigError("retry_delay must be callable")
        if self.error_handler is not None and not callable(self.error_handler):
            raise ConfigError("error_handler must be callable")
        if self.lease_s <= 0:
            raise ConfigError(f"lease must be positive, got {self.lease_s!r}")
        if self.renew_interval_s is None:
            # Extend at a third of the lease, not at its end: one missed beat must not lose a task.
            object.__setattr__(self, "renew_interval_s", self.lease_s / 3)
        elif not 0 < self.renew_interval_s < self.lease_s:
            raise ConfigError("renew_interval must be positive and shorter than the lease")
        if not isinstance(self.max_payload_bytes, int) or self.max_payload_bytes < 1:
            raise ConfigError("max_payload_bytes must be a positive int")
        if not isinstance(self.max_crash_attempts, int) or self.max_crash_attempts < 1:
            raise ConfigError("max_crash_attempts must be a positive int")
        if self.completion_batch_size < 1:
            raise ConfigError("completion_batch_size must be positive")
        self._check_durations()

    def _check_durations(self) -> None:
        for name in ("recover_interval_s", "janitor_interval_s", "poll_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.removesuffix('_s')} must be positive")
        for name in (
            "shutdown_timeout_s",
            "sync_cancel_grace_s",
            "recover_delay_s",
            "completion_linger_s",
            "release_grace_s",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.removesuffix('_s')} must not be negative")

    @property
    def renew_every_s(self) -> float:
        """The lease renewal interval in seconds (always set after validation)."""
        return self.renew_interval_s if self.renew_interval_s is not None else self.lease_s / 3

    @property
    def queue_names(self) -> tuple[str, ...]:
        """The queue names, in the order given."""
        return tuple(name for name, _ in self.queues)
