"""When a schedule fires: cron expressions and fixed intervals, in a time zone, DST included.

A :class:`FireSpec` answers two questions about fire times (seconds since the epoch, whatever
zone the entry is written in): the first fire time strictly after a moment, and the last one at
or before it. Every scheduler computes the same answers from the same broker clock, so they
agree on fire times without talking to each other.

Rules (documented in docs/scheduling.md):

* ``cron``: five fields (minute hour day month weekday), or six with the **seconds first**
  (``*/10 * * * * *``), or an alias: ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
  ``@daily`` (``@midnight``), ``@hourly``. Parsed and iterated by croniter (6.1 or newer:
  6.0 moved a fire time in the skipped hour past the first valid instant; the DST tests in
  ``tests/unit/test_schedule_spec.py`` pin the behaviour).
* ``every``: fires on the multiples of the interval since the Unix epoch, so ``every=60`` fires
  at the start of each UTC minute; the time zone plays no part.
* Daylight saving time, in the entry's zone: a fire time in the hour that is skipped (clocks go
  forward) fires once, at the first valid instant after it (``30 2 * * *`` fires at 03:00 that
  day); a fire time in the hour that repeats (clocks go back) fires once, at its first
  occurrence.
"""

from __future__ import annotations

import enum
import functools
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from conveyor.errors import ConfigError

__all__ = ["ALIASES", "MIN_EVERY", "FireSpec", "MissedPolicy", "parse_missed", "parse_zone"]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The ``@`` aliases, as five-field expressions (translated here, whatever the cron library)."""

MIN_EVERY = timedelta(seconds=1)
"""The shortest ``every``: a cron expression cannot fire more often either."""

_FIELDS5 = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELDS6 = ("second", *_FIELDS5)
_US = 1_000_000


class MissedPolicy(enum.StrEnum):
    """What a scheduler does with fire times that passed while no scheduler was running."""

    ONCE = "once"
    """Enqueue one task for all of an entry's missed fire times (the default)."""
    SKIP = "skip"
    """Enqueue nothing for them."""
    ALL = "all"
    """Enqueue one task per missed fire time, the latest :data:`MAX_MISSED_FIRES` of them."""


MAX_MISSED_FIRES = 100
"""The most tasks ``missed="all"`` enqueues for one entry's missed fire times."""


def parse_missed(missed: str) -> MissedPolicy:
    """The policy named ``missed``.

    Raises:
        ConfigError: not one of once, skip, all.
    """
    try:
        return MissedPolicy(missed)
    except ValueError:
        names = ", ".join(p.value for p in MissedPolicy)
        raise ConfigError(f"missed must be one of {names}, not {missed!r}") from None


def parse_zone(tz: str) -> tzinfo:
    """The time zone named ``tz`` (an IANA name such as ``Europe/Paris``, or ``UTC``).

    Raises:
        ConfigError: an unknown or malformed zone name.
    """
    if not isinstance(tz, str):
        raise ConfigError(f"tz must be a time zone name, not {type(tz).__name__}")
    if tz == "UTC":
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"unknown time zone {tz!r} (tz must be an IANA name)") from None


def _check_cron(expr: str) -> tuple[str, bool]:
    """The expression to hand croniter and whether it has seconds, or a ConfigError naming
    the bad part."""
    if not isinstance(expr, str):
        raise ConfigError(f"cron must be a string, not {type(expr).__name__}")
    return _checked_cron(" ".join(expr.split()), expr)


# croniter takes about a millisecond to check an expression: a scheduler sees the same few
# expressions every round, so each is checked once.
@functools.lru_cache(maxsize=4096)
def _checked_cron(text: str, expr: str) -> tuple[str, bool]:
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            known = ", ".join(ALIASES)
            raise ConfigError(f"unknown cron alias {text!r}: must be one of {known}")
        return ALIASES[text.lower()], False
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise ConfigError(
            f"cron expression {expr!r} has {len(parts)} fields: it needs five "
            "(minute hour day month weekday) or six with the seconds first"
        )
    seconds = len(parts) == 6
    names = _FIELDS6 if seconds else _FIELDS5
    for i, (name, part) in enumerate(zip(names, parts, strict=True)):
        probe = ["*"] * len(parts)
        probe[i] = part
        if not croniter.is_valid(" ".join(probe), second_at_beginning=seconds):
            raise ConfigError(f"cron expression {expr!r}: bad {name} field {part!r}")
    if not croniter.is_valid(text, second_at_beginning=seconds):
        raise ConfigError(f"cron expression {expr!r} is not valid")
    return text, seconds


@dataclass(slots=True)
class FireSpec:
    """An entry's fire times: exactly one of a cron expression or an interval, in a zone.

    Build it with :meth:`parse`, which checks everything and raises ``ConfigError`` naming
    the bad part. Times in and out are seconds since the epoch (floats, whole microseconds).
    """

    cron: str | None
    every_us: int | None
    tz: str
    _zone: tzinfo = field(repr=False)
    _iter: croniter[float] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def parse(
        cls, *, cron: str | None = None, every: float | timedelta | None = None, tz: str = "UTC"
    ) -> FireSpec:
        """Check and build a spec.

        Raises:
            ConfigError: neither or both of ``cron`` and ``every``; a bad cron expression
                (naming the field), an interval under a second, an unknown time zone.
        """
        zone = parse_zone(tz)
        if (cron is None) == (every is None):
            raise ConfigError("give exactly one of cron= and every=")
        if every is not None:
            return cls(cron=None, every_us=_every_us(every), tz=tz, _zone=zone)
        assert cron is not None
        _check_cron(cron)
        spec = cls(cron=" ".join(cron.split()), every_us=None, tz=tz, _zone=zone)
        spec.next_after(time.time())  # "0 0 31 2 *" is well formed but never fires
        return spec

    @property
    def every(self) -> timedelta | None:
        """The interval, or ``None`` for a cron spec."""
        return None if self.every_us is None else timedelta(microseconds=self.every_us)

    def _croniter(self) -> croniter[float]:
        if self._iter is None:
            assert self.cron is not None
            text, seconds = _check_cron(self.cron)
            self._iter = croniter(
                text, datetime.now(self._zone), ret_type=float, second_at_beginning=seconds
            )
        return self._iter

    def next_after(self, ts: float) -> float:
        """The first fire time strictly after ``ts``.

        Raises:
            ConfigError: a cron expression with no fire time after ``ts`` (croniter looks
                50 years ahead).
        """
        if self.every_us is not None:
            us = _to_us(ts)
            return (us // self.every_us + 1) * self.every_us / _US
        it = self._croniter()
        start = datetime.fromtimestamp(ts, self._zone)
        while True:
            try:
                found = it.get_next(datetime, start_time=start)
            except CroniterError:
                raise ConfigError(
                    f"cron expression {self.cron!r} never fires after {start.isoformat()}"
                ) from None
            if not self._repeated(found):
                return _round(found.timestamp())
            start = found

    def last_at_or_before(self, ts: float) -> float | None:
        """The latest fire time at or before ``ts`` (``None`` when there is none)."""
        if self.every_us is not None:
            us = _to_us(ts)
            return (us // self.every_us) * self.every_us / _US
        it = self._croniter()
        # croniter looks strictly before its start: start just after ts to include ts itself.
        start = datetime.fromtimestamp(ts, self._zone) + timedelta(microseconds=1)
        for _ in range(3):  # at most one repeated wall time to step over
            try:
                found = it.get_prev(datetime, start_time=start)
            except CroniterError:
                return None
            if not self._repeated(found):
                return _round(found.timestamp())
            start = found
        return None

    def _repeated(self, when: datetime) -> bool:
        """Whether ``when`` is the second occurrence of a wall time the zone repeats (clocks
        going back): that fire time already fired at the first occurrence."""
        local = when.astimezone(self._zone).replace(tzinfo=None)
        first = local.replace(fold=0, tzinfo=self._zone)
        second = local.replace(fold=1, tzinfo=self._zone)
        offset = when.utcoffset()
        return first.utcoffset() != second.utcoffset() and offset == second.utcoffset()


def _every_us(every: float | timedelta) -> int:
    if isinstance(every, timedelta):
        us = every // timedelta(microseconds=1)
    elif isinstance(every, int | float) and not isinstance(every, bool):
        if not math.isfinite(every):
            raise ConfigError(f"every must be a finite number of seconds, not {every!r}")
        us = round(every * _US)
    else:
        raise ConfigError(f"every must be seconds or a timedelta, not {type(every).__name__}")
    if us < MIN_EVERY // timedelta(microseconds=1):
        raise ConfigError(f"every must be at least 1 second, not {every!r}")
    if us > 366 * 86400 * _US * 100:
        raise ConfigError(f"every is out of range: {every!r}")
    return us


def _to_us(ts: float) -> int:
    return math.floor(ts * _US + 0.5)


def _round(ts: float) -> float:
    return _to_us(ts) / _US
