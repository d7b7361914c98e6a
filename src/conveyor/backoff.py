"""How long to wait before retrying: the retry-delay policy for failed tasks, and the reconnect
backoff the worker's loops use while the broker is unreachable.

The default retry delay is capped exponential backoff with jitter::

    delay(n) = min(cap, base * factor ** n) * (1 - jitter * U),   U ~ uniform[0, 1)

where ``n`` is ``TaskInfo.retried`` (failed attempts before this one). With the defaults
(base 5 s, factor 2, cap 1 h, jitter 0.5) the first retry waits 2.5-5 s, then 5-10 s, 10-20 s, ...
reaching the one-hour cap at the 11th retry; the 25 retries of a default task span 8-16 h,
about 12 h on average.

Why not asynq's ``n**4 + 15 + rand(30 * (n + 1))`` seconds: it starts slower (15-45 s) and grows
without bound (4.5 days for the 25th retry, about three weeks in all), so a task whose dependency is
back within minutes still waits days. A one-hour cap keeps a failing task retrying at a pace a
person can follow, and the span still covers an overnight outage. Jitter spreads the retries of
tasks that failed together (one broker or API outage) so they do not return as one wave; keeping
half of the delay fixed guarantees a floor, so a retry never follows its failure at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from conveyor.errors import ConfigError
from conveyor.message import Task

__all__ = ["ExponentialBackoff", "ReconnectBackoff", "RetryDelay", "default_retry_delay"]


class RetryDelay(Protocol):
    """Decides how long a failed task waits before its next attempt.

    Called with ``retried`` (the task's failed attempts before this one), the exception the attempt
    raised and the task; returns the delay.
    """

    def __call__(self, retried: int, error: BaseException, task: Task, /) -> timedelta:
        """Return how long to wait before the next attempt."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ExponentialBackoff:
    """Capped exponential backoff with jitter: ``min(cap, base * factor**n) * (1 - jitter * U)``.

    Example::

        server = Server(url, retry_delay=ExponentialBackoff(base=timedelta(seconds=1)))

    Args:
        base: delay of the first retry, before jitter.
        factor: growth per failed attempt.
        cap: largest delay, before jitter.
        jitter: the fraction of the delay drawn at random (0 = none, 1 = "full jitter").
        rng: random source; pass a seeded ``random.Random`` for reproducible delays.
    """

    base: timedelta = timedelta(seconds=5)
    factor: float = 2.0
    cap: timedelta = timedelta(hours=1)
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) or self.cap < self.base:
            raise ConfigError("ExponentialBackoff needs 0 < base <= cap")
        if self.factor < 1.0:
            raise ConfigError("ExponentialBackoff factor must be >= 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError("ExponentialBackoff jitter must be within [0, 1]")

    def __call__(self, retried: int, error: BaseException, task: Task, /) -> timedelta:
        """Return the delay before the retry that follows ``retried`` earlier failures."""
        base_s, cap_s = self.base.total_seconds(), self.cap.total_seconds()
        raw = cap_s
        # Compare exponents instead of computing factor**retried, which overflows for large n.
        if retried < 1024:
            raw = min(cap_s, base_s * self.factor ** max(retried, 0))
        return timedelta(seconds=raw * (1.0 - self.jitter * self.rng.random()))


default_retry_delay: RetryDelay = ExponentialBackoff()
"""The server's default :class:`RetryDelay` (5 s doubling, capped at 1 h, 50 % jitter)."""


class ReconnectBackoff:
    """Delays between attempts while the broker is unreachable: 50 ms doubling to ``cap_s``.

    Short at first so a blip costs little; capped at 5 s so a worker notices a restarted broker
    within seconds (the reliability contract asks for resuming within 5 s). Full jitter keeps a
    fleet of workers from reconnecting in lockstep.
    """

    def __init__(self, *, first_s: float = 0.05, cap_s: float = 5.0) -> None:
        self._first_s = first_s
        self._cap_s = cap_s
        self._next_s = first_s

    def next_delay(self) -> float:
        """Return the next delay in seconds and double the one after it."""
        current = self._next_s
        self._next_s = min(self._cap_s, current * 2)
        return current * (0.5 + 0.5 * random.random())

    def reset(self) -> None:
        """Start from the shortest delay again (after a success)."""
        self._next_s = self._first_s
