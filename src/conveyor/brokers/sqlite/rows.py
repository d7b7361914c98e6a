"""Turning stored rows into conveyor types, and refusing rows that cannot be decoded.

Tables are STRICT, so column *types* are guaranteed by SQLite; what a reader must still survive is
an unknown *value*: a state or encoding written by a newer version, a tool or a bad hand edit.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from conveyor.message import Encoding, TaskInfo, TaskState, to_datetime

# Positions of the "task columns" selected by queries.sql (see the header of that file).
SEQ, QUEUE, ID, TYPE, STATE, PAYLOAD, ENCODING, MAX_RETRY, RETRIED, TOKEN = range(10)
TIMEOUT_S, DEADLINE, RETENTION_S, UNIQUE_KEY, ENQUEUED_AT, READY_AT, SINCE = range(10, 17)
LEASE_EXPIRES_AT, LAST_ERROR, LAST_FAILED_AT, COMPLETED_AT, RESULT = range(17, 22)

WAITING = frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY})

Row = tuple[Any, ...]
"""One row as the sqlite3 module returns it."""


class UndecodableRowError(Exception):
    """A stored task row holds a value conveyor does not understand (internal to the backend)."""


def _enum_value(row: Row, column: int, kind: type[TaskState] | type[Encoding], what: str) -> Any:
    try:
        return kind(row[column])
    except ValueError:
        raise UndecodableRowError(f"unknown {what} {row[column]!r:.40}") from None


def task_info(row: Row) -> TaskInfo:
    """Decode one row of task columns.

    Raises:
        UndecodableRowError: with a short reason, when the state or encoding is unknown, or a
            time or duration is out of ``datetime``/``timedelta`` range (``1e20``, ``inf``: a
            STRICT REAL column takes them).
    """
    state: TaskState = _enum_value(row, STATE, TaskState, "state")
    encoding: Encoding = _enum_value(row, ENCODING, Encoding, "encoding")
    try:
        return _decoded(row, state, encoding)
    except (ValueError, OverflowError, TypeError) as exc:
        raise UndecodableRowError(f"bad time or duration ({exc})") from None


def _decoded(row: Row, state: TaskState, encoding: Encoding) -> TaskInfo:
    timeout_s = row[TIMEOUT_S]
    return TaskInfo(
        id=row[ID],
        queue=row[QUEUE],
        type=row[TYPE],
        state=state,
        raw_payload=row[PAYLOAD],
        encoding=encoding,
        max_retry=row[MAX_RETRY],
        retried=row[RETRIED],
        last_error=row[LAST_ERROR],
        last_failed_at=to_datetime(row[LAST_FAILED_AT]),
        timeout=None if timeout_s is None else timedelta(seconds=timeout_s),
        deadline=to_datetime(row[DEADLINE]),
        next_process_at=to_datetime(row[READY_AT]) if state in WAITING else None,
        enqueued_at=to_datetime(row[ENQUEUED_AT]),
        completed_at=to_datetime(row[COMPLETED_AT]),
        raw_result=row[RESULT],
        retention=timedelta(seconds=row[RETENTION_S]),
        unique_key=row[UNIQUE_KEY],
    )
