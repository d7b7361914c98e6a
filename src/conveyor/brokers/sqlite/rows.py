"""Turning stored rows into conveyor types, and refusing rows that cannot be decoded.

Tables are STRICT, so column *types* are guaranteed by SQLite; what a reader must still survive is
an unknown *value*: a state or encoding written by a newer version, a tool or a bad hand edit.
That includes TEXT that is not UTF-8 (SQLite stores whatever bytes it is given), which sqlite3
refuses while *fetching*, before any row reaches this module: the store catches that
(:func:`is_not_utf8`), fetches again with the connection's ``text_factory`` set to ``bytes``, and
uses :func:`not_utf8` and :func:`as_text` on those rows. The normal fetch is left as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from conveyor.message import Encoding, TaskInfo, TaskState, _new_task_info, to_datetime

# Positions of the "task columns" selected by queries.sql (see the header of that file).
SEQ, QUEUE, ID, TYPE, STATE, PAYLOAD, ENCODING, MAX_RETRY, RETRIED, TOKEN = range(10)
TIMEOUT_S, DEADLINE, RETENTION_S, UNIQUE_KEY, ENQUEUED_AT, READY_AT, SINCE = range(10, 17)
LEASE_EXPIRES_AT, LAST_ERROR, LAST_FAILED_AT, COMPLETED_AT, RESULT, HEADERS = range(17, 23)

TEXT = (QUEUE, ID, TYPE, STATE, ENCODING, UNIQUE_KEY, LAST_ERROR)
"""Positions of the TEXT task columns; the others hold numbers or BLOBs."""
_TEXT_NAMES = {
    QUEUE: "queue",
    ID: "id",
    TYPE: "type",
    STATE: "state",
    ENCODING: "encoding",
    UNIQUE_KEY: "unique_key",
    LAST_ERROR: "last_error",
}

WAITING = frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY})

Row = tuple[Any, ...]
"""One row as the sqlite3 module returns it."""


class UndecodableRowError(Exception):
    """A stored task row holds a value conveyor does not understand (internal to the backend)."""


def is_not_utf8(exc: sqlite3.Error) -> bool:
    """Whether sqlite3 failed a fetch because a TEXT value it met is not UTF-8."""
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
        "Could not decode to UTF-8"
    )


def not_utf8(row: Row) -> str | None:
    """Why a task row fetched with ``text_factory=bytes`` cannot be read as text, or None."""
    for column in TEXT:
        value = row[column]
        if isinstance(value, bytes):
            try:
                value.decode()
            except UnicodeDecodeError:
                return f"{_TEXT_NAMES[column]} is not UTF-8 text ({value!r:.40})"
    return None


def as_text(row: Row, columns: Sequence[int] = TEXT) -> Row:
    """A row fetched with ``text_factory=bytes``, its TEXT ``columns`` decoded as UTF-8, any
    invalid byte becoming U+FFFD (BLOB columns, bytes either way, are left alone)."""
    decoded = list(row)
    for column in columns:
        value = decoded[column]
        if isinstance(value, bytes):
            decoded[column] = value.decode(errors="replace")
    return tuple(decoded)


def _enum_value(row: Row, column: int, kind: type[TaskState] | type[Encoding], what: str) -> Any:
    try:
        return kind(row[column])
    except ValueError:
        raise UndecodableRowError(f"unknown {what} {row[column]!r:.40}") from None


def task_info(row: Row, *, leased: bool = False) -> TaskInfo:
    """Decode one row of task columns; ``leased``: as the claim that is making it ACTIVE
    returns it (state ACTIVE, no next process time).

    Raises:
        UndecodableRowError: with a short reason, when the state or encoding is unknown, or a
            time or duration is out of ``datetime``/``timedelta`` range (``1e20``, ``inf``: a
            STRICT REAL column takes them).
    """
    state: TaskState = _enum_value(row, STATE, TaskState, "state")
    encoding: Encoding = _enum_value(row, ENCODING, Encoding, "encoding")
    try:
        if leased:
            return _decoded(row, TaskState.ACTIVE, encoding, None)
        return _decoded(row, state, encoding, row[READY_AT] if state in WAITING else None)
    except (ValueError, OverflowError, TypeError) as exc:
        raise UndecodableRowError(f"bad time or duration ({exc})") from None


def _decoded(row: Row, state: TaskState, encoding: Encoding, ready_at: float | None) -> TaskInfo:
    timeout_s = row[TIMEOUT_S]
    # Positional, in field order, without the dataclass __init__ (see message._new_task_info).
    return _new_task_info(
        row[ID],
        row[QUEUE],
        row[TYPE],
        state,
        row[PAYLOAD],
        encoding,
        row[MAX_RETRY],
        row[RETRIED],
        row[LAST_ERROR],
        to_datetime(row[LAST_FAILED_AT]),
        None if timeout_s is None else timedelta(seconds=timeout_s),
        to_datetime(row[DEADLINE]),
        to_datetime(ready_at),
        to_datetime(row[ENQUEUED_AT]),
        to_datetime(row[COMPLETED_AT]),
        row[RESULT],
        timedelta(seconds=row[RETENTION_S]),
        row[UNIQUE_KEY],
        row[HEADERS],
    )
