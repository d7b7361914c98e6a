"""The attempt history protocol: a task's failed attempts, kept beside its record.

``TaskInfo`` carries only the retry count and the last error; the history keeps, for each
failed attempt, which attempt it was, when it failed (broker clock) and its error. What every
backend promises:

* A record is written in the same atomic step as the failed attempt's transition: ``retry``,
  ``archive`` (a cancel is an archive with the error ``"cancelled"``), ``recover_expired`` (a
  lapsed lease counts as a failed attempt), and a workflow step's failure. Its ``attempt`` is
  the task's ``retried`` after the failure; its error is cut to :data:`HISTORY_ERROR_CHARS`
  characters (:func:`history_error`).
* Only the last :data:`HISTORY_KEPT` records are kept: the step that adds one drops the oldest.
* Nothing at all is written for a task that never fails (the hot path pays nothing).
* The history lives and dies with its task: deleting the task (``purge_expired`` after its
  retention, ``delete_task(s)``, ``delete_queue``, a workflow's purge) deletes it in the same
  step, and a task later enqueued under the same id starts with none. ``run_task`` keeps it.

Memory keeps the records on the task object, SQLite in the ``task_attempts`` table (written by a
trigger on the ``retried`` column, dropped by a trigger with the task row), Redis in a
``history`` field of the task hash (a JSON list, in the task's slot; see ``fail_task`` in
``scripts/lib.lua``).
"""

from __future__ import annotations

import json
from typing import Protocol, runtime_checkable

from conveyor.message import AttemptRecord, to_datetime

__all__ = [
    "HISTORY_ERROR_CHARS",
    "HISTORY_KEPT",
    "AttemptHistory",
    "decode_history",
    "history_error",
]

HISTORY_KEPT = 20
"""How many failed attempts a task's history keeps (the most recent ones)."""

HISTORY_ERROR_CHARS = 512
"""How many characters of each attempt's error the history keeps (``last_error`` keeps more)."""


def history_error(error: str) -> str:
    """The error text an attempt record keeps: the first :data:`HISTORY_ERROR_CHARS` characters."""
    return error[:HISTORY_ERROR_CHARS]


def decode_history(raw: bytes | str | None) -> tuple[AttemptRecord, ...]:
    """Records from the stored JSON list of ``[attempt, failed_at, error]`` entries.

    ``failed_at`` is seconds since the epoch, or whole microseconds in a string (Redis keeps
    times in microseconds, and Lua's JSON encoder would round a number that long). An entry that
    does not have that shape is skipped, never raised on: the history is for reading.
    """
    if raw is None:
        return ()
    if isinstance(raw, bytes):  # Lua's encoder passes bytes through: never fail on bad UTF-8
        raw = raw.decode(errors="replace")
    try:
        entries = json.loads(raw)
    except (ValueError, RecursionError):
        return ()
    if not isinstance(entries, list):
        return ()
    records = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3):
            continue
        attempt, when, error = entry
        if isinstance(when, str) and when.isdigit():
            when = int(when) / 1_000_000
        if not (isinstance(attempt, int) and isinstance(when, int | float)):
            continue
        failed_at = to_datetime(float(when))
        if failed_at is not None and isinstance(error, str):
            records.append(AttemptRecord(attempt=attempt, failed_at=failed_at, error=error))
    return tuple(records)


@runtime_checkable
class AttemptHistory(Protocol):
    """A task's failed attempts; every built-in broker implements it beside ``Broker``."""

    async def load_history(self, queue: str, task_id: str) -> tuple[AttemptRecord, ...]:
        """The task's failed attempts, oldest first (empty: no such task, or none failed)."""
        ...
