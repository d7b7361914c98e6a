"""Flow control kept in the broker: queue length limits and rate limits per task type.

A small protocol of its own beside :class:`~conveyor.brokers.protocol.Broker`: every backend
(memory, SQLite, Redis) implements :class:`FlowControl`, and enforces the limits inside its own
atomic steps, so every producer and worker sharing the broker obeys them:

* **Queue length** (:class:`QueueLimit`): ``enqueue`` counts the queue's PENDING, SCHEDULED and
  RETRY tasks. With ``"reject"``, a batch that would pass ``max_length`` raises
  :class:`~conveyor.errors.QueueFullError` and stores nothing (none of the batch). With
  ``"drop_oldest"``, the oldest PENDING tasks make room: they are ARCHIVED with the error
  :data:`DROPPED_ERROR` in the same step (not a failed attempt: no counter moves); when there
  are too few PENDING tasks to drop, the batch is rejected as with ``"reject"``.
* **Rate** (:class:`Rate`) per task type: a token bucket whose capacity is the rate's count,
  shared by every worker. ``claim`` takes one token per task it starts, and each token comes
  back ``period_s`` after it was taken (by the broker's clock): so no window of ``period_s``
  ever holds more than ``count`` starts, and a burst is at most ``count``. (A bucket refilled
  continuously would let a window hold up to twice the count when starts lag behind their
  tokens.) A task that finds the bucket empty is not started: in the same step it becomes
  SCHEDULED until a token is back for it (no failure, no retry counted), so a worker never
  spins on it and other tasks keep flowing past it.
* **Concurrency** per task type and per queue: at most ``n`` ACTIVE tasks at once, whatever
  each worker's own concurrency. The count is read from the tasks' states, never kept in a
  counter of its own, so every way out of ACTIVE (completion, retry, archive, release, a
  crashed worker's lease recovered) frees the slot. ``claim`` passes over a queue at its limit
  as if it were empty (and an idle wait does not wake for it); a task whose type is at its
  limit is held back in the same step: SCHEDULED, no failure counted, and moved back to the
  front of its queue by the first claim that finds a slot of its type free (or, at the
  latest, after :data:`CONCURRENCY_RECHECK_S`).

Both type limits are fleet-wide on every backend. On Redis Cluster, where each queue is in a
slot of its own, a type's limits live in the type's slot, and a running task holds a permit
there that lapses with its lease (:mod:`conveyor.brokers.redis.type_permits`).
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

from conveyor.errors import ConfigError

__all__ = [
    "CONCURRENCY_RECHECK_S",
    "DROPPED_ERROR",
    "FlowControl",
    "Overflow",
    "QueueLimit",
    "Rate",
    "TaskLimits",
    "check_max_active",
    "take_token",
    "token_index",
]

Overflow = Literal["reject", "drop_oldest"]
"""What an enqueue does to a full queue: refuse the batch, or archive the oldest pending tasks."""

DROPPED_ERROR = "dropped: queue full"
"""The error recorded on a task archived to make room in a ``drop_oldest`` queue."""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(?P<count>[^/]*?)\s*/\s*(?P<size>[0-9]*(?:\.[0-9]+)?)\s*(?P<unit>\S*)\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit: at most ``count`` task starts per ``period_s`` seconds (burst ``count``).

    Example::

        Rate.parse("10/s")     # Rate(count=10, period_s=1.0)
        Rate.parse("100/10s")  # Rate(count=100, period_s=10.0)
    """

    count: int
    period_s: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"rate limit count must be a whole number >= 1, not {self.count!r}")
        if not math.isfinite(self.period_s) or self.period_s <= 0:
            raise ConfigError(f"rate limit period must be > 0 seconds, not {self.period_s!r}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Read ``"<count>/<unit>"`` or ``"<count>/<n><unit>"``, the unit ``s``, ``m`` or ``h``.

        Raises:
            ConfigError: the text is not a rate; the message names the bad part.
        """
        if not isinstance(text, str):
            raise ConfigError(f"rate limit must be a string like '10/s', not {text!r}")
        match = _RATE.match(text)
        if match is None:
            raise ConfigError(f"rate limit {text!r}: expected '<count>/<unit>', e.g. '10/s'")
        count, size, unit = match["count"], match["size"], match["unit"]
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"rate limit {text!r}: count {count!r} is not a whole number >= 1")
        if unit not in _UNITS:
            raise ConfigError(f"rate limit {text!r}: unit {unit!r} is not one of s, m, h")
        n = float(size) if size else 1.0
        if n <= 0:
            raise ConfigError(f"rate limit {text!r}: period {size!r} must be > 0")
        return cls(int(count), n * _UNITS[unit])

    def __str__(self) -> str:
        for unit, seconds in _UNITS.items():
            if self.period_s == seconds:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.period_s:g}s"


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueLimit:
    """A queue's length limit: at most ``max_length`` PENDING, SCHEDULED and RETRY tasks."""

    max_length: int
    overflow: Overflow = "reject"

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_length, bool)
            or not isinstance(self.max_length, int)
            or self.max_length < 0
        ):
            raise ConfigError(f"max_length must be a whole number >= 0, not {self.max_length!r}")
        if self.overflow not in get_args(Overflow):
            raise ConfigError(f"overflow must be 'reject' or 'drop_oldest', not {self.overflow!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskLimits:
    """The limits ``@app.task`` declares for one task type, written to the broker when a
    worker serving the app starts (see :mod:`conveyor.worker.limits`)."""

    rate: Rate | None = None
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency is not None:
            check_max_active(self.max_concurrency)


def check_max_active(n: int) -> int:
    """``n`` if it is a valid concurrency limit (a whole number >= 1).

    Raises:
        ConfigError: it is not.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"a concurrency limit must be a whole number >= 1, not {n!r}")
    return n


def take_token(rate: Rate, out: deque[float], now: float, ahead: int = 0) -> float | None:
    """One claim's step on a rate limit's bucket, whose tokens each come back ``period_s``
    after they were taken.

    ``out`` holds when the tokens still out were taken (broker times, oldest first); it is
    updated in place: the tokens back are dropped, and ``now`` is added when one is taken.
    Returns ``None`` when the task may start, else when it may: when the token it waits for
    comes back. ``ahead`` is how many tasks this same claim already held back: each waits for
    the next token after the last one's.
    """
    while out and out[0] <= now - rate.period_s:
        out.popleft()
    if len(out) < rate.count and ahead == 0:
        out.append(now)
        return None
    rounds, index = token_index(rate, len(out), ahead)
    return out[index] + rate.period_s * (rounds + 1)


def token_index(rate: Rate, out: int, ahead: int) -> tuple[int, int]:
    """For a task held back with ``out`` tokens out and ``ahead`` tasks held before it in the
    same claim: (how many rounds of the tokens out it waits, the index of the token, oldest
    first, whose return in the last round frees it). Tokens come back in the order they were
    taken; a round of them serves ``out`` tasks, and the count may have been lowered."""
    return divmod(out - rate.count + ahead, out)


@runtime_checkable
class FlowControl(Protocol):
    """Limits stored in the broker and enforced by its ``enqueue`` and ``claim``.

    Settings take effect at once for every client of the broker (on Redis, a rate limit set
    by another process is seen by a worker within :data:`RATE_REFRESH_S`).
    """

    async def set_queue_limit(self, queue: str, limit: QueueLimit | None) -> None:
        """Set ``queue``'s length limit, or remove it (``None``). Stored tasks are kept."""
        ...

    async def queue_limit(self, queue: str) -> QueueLimit | None:
        """``queue``'s length limit, ``None`` when it has none."""
        ...

    async def set_rate_limit(self, task_type: str, rate: Rate | None) -> None:
        """Set the rate limit of ``task_type``, or remove it (``None``)."""
        ...

    async def rate_limits(self) -> dict[str, Rate]:
        """Every task type's rate limit."""
        ...

    async def set_task_concurrency(self, task_type: str, max_active: int | None) -> None:
        """Let at most ``max_active`` tasks of ``task_type`` be ACTIVE at once (``None``: no
        limit)."""
        ...

    async def task_concurrency(self) -> dict[str, int]:
        """Every task type's concurrency limit."""
        ...

    async def set_queue_concurrency(self, queue: str, max_active: int | None) -> None:
        """Let at most ``max_active`` tasks of ``queue`` be ACTIVE at once (``None``: no
        limit)."""
        ...

    async def queue_concurrency(self, queue: str) -> int | None:
        """``queue``'s concurrency limit, ``None`` when it has none."""
        ...


RATE_REFRESH_S = 1.0
"""How old a Redis broker's copy of the rate and task concurrency limits may be before its
next claim reads them."""

CONCURRENCY_RECHECK_S = 60.0
"""How long a task held back by its type's concurrency limit stays SCHEDULED at most. A claim
that finds a slot free (on Redis Cluster, the step that frees it) moves it back at once; this
only bounds the wait should none look."""
