"""Planning one fire of a due entry: which fire times get a task, and where the cursor goes.

Pure logic on the broker's ``now``, tested on a fake clock. A due entry's cursor ``c`` is its
first fire time not yet handled (``c <= now``). The fire times from ``c`` to ``now``:

* within :data:`LATE_GRACE_S` of ``now`` are *late*, not missed (a scheduler that was busy, a
  broker that blinked): each gets its task;
* older ones are *missed* (no scheduler was running): the entry's ``missed`` policy decides:
  ``once`` one task, for the latest of them; ``skip`` none; ``all`` one each, the latest
  :data:`~conveyor.scheduling.spec.MAX_MISSED_FIRES` of them.

The cursor then moves to the first fire time after ``now``. The broker applies the plan only if
the cursor is still ``c`` (see :mod:`conveyor.brokers.schedules`), so each fire time is handled
once, by whichever scheduler gets there first.
"""

from __future__ import annotations

from typing import Protocol

from conveyor.brokers.schedules import ScheduleFire, ScheduleRecord
from conveyor.scheduling.entry import ScheduleTarget, messages_for, target_of, workflows_for
from conveyor.scheduling.spec import MAX_MISSED_FIRES, MissedPolicy

__all__ = ["LATE_GRACE_S", "FireTimes", "fire_times", "plan_fire"]


class FireTimes(Protocol):
    """What planning asks of an entry's spec (a :class:`~conveyor.scheduling.spec.FireSpec`,
    or the scheduler's memo of one)."""

    def next_after(self, ts: float) -> float:
        """The first fire time strictly after ``ts``."""
        ...

    def last_at_or_before(self, ts: float) -> float | None:
        """The latest fire time at or before ``ts``, or ``None``."""
        ...


LATE_GRACE_S = 5.0
"""How far behind the broker's clock a fire time may be and still count as late, not missed.

Long enough for a scheduler's round, a slow broker call and a broker restart of a second or
two; short enough that a scheduler starting after a real outage applies the ``missed`` policy
rather than firing every one of an every-second entry's missed times."""

_MAX_LATE = 1000  # bounds a round's work whatever the interval (1 s entries have at most 6)


def fire_times(
    spec: FireTimes, cursor: float, now: float, missed: MissedPolicy
) -> tuple[list[float], float]:
    """The fire times that get a task, oldest first, for an entry due at ``cursor``, and the
    first fire time after ``now`` (the new cursor)."""
    cutoff = now - LATE_GRACE_S
    chosen: list[float] = []
    if cursor <= cutoff:
        chosen = _missed(spec, cursor, cutoff, missed)
        at = spec.next_after(cutoff)
    else:
        at = cursor
    while at <= now and len(chosen) < _MAX_LATE + MAX_MISSED_FIRES:
        chosen.append(at)
        at = spec.next_after(at)
    # Computing the next fire time is most of a round's cost: the loop's last one is it.
    return chosen, at if at > now else spec.next_after(now)


def _missed(spec: FireTimes, cursor: float, cutoff: float, missed: MissedPolicy) -> list[float]:
    if missed is MissedPolicy.SKIP:
        return []
    latest = spec.last_at_or_before(cutoff)
    if latest is None or latest < cursor:
        latest = cursor
    if missed is MissedPolicy.ONCE:
        return [latest]
    found = [latest]
    while len(found) < MAX_MISSED_FIRES:
        before = spec.last_at_or_before(found[-1] - 1e-6)
        if before is None or before < cursor:
            break
        found.append(before)
    return found[::-1]


def plan_fire(
    record: ScheduleRecord, spec: FireTimes, now: float
) -> tuple[ScheduleFire, list[float]]:
    """The compare-and-set step that handles every fire time of ``record`` up to ``now``, and
    the fire times its messages are for (in the same order)."""
    policy = MissedPolicy(record.missed)
    times, next_fire_at = fire_times(spec, record.next_fire_at, now, policy)
    workflow = target_of(record) is not ScheduleTarget.TASK
    fire = ScheduleFire(
        name=record.name,
        queue=record.queue,
        revision=record.revision,
        expected_next=record.next_fire_at,
        next_fire_at=next_fire_at,
        fire_at=times[-1] if times else None,
        messages=() if workflow else messages_for(record, times),
        workflows=workflows_for(record, times) if workflow else (),
    )
    return fire, times
