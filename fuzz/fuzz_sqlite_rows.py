"""Fuzz the SQLite broker's row decoding (brokers/sqlite/rows.py) through a real database file.

Each input becomes one task row written with raw SQL into a real SQLite file that has the
broker's own STRICT schema (so only values the column types allow get in: 64-bit integers,
REALs such as 1e300 and inf, any text, any blob), read back with the broker's ``get_task``
query and decoded with ``rows.task_info``. Checks: decoding returns a well-typed TaskInfo or
raises ``UndecodableRowError``, nothing else; ``payload``/``result`` raise only
``PayloadError``. The same values are also decoded as a plain tuple (no SQLite in between).

Text columns may hold bytes that are not UTF-8 (``NON_UTF8_TEXT``), which sqlite3 refuses to
fetch as text: the row is then read as the store reads it after such a failure (TEXT fetched as
bytes), and ``rows.not_utf8`` must name the column while ``rows.as_text`` makes it decodable.

Run: .venv/bin/python fuzz/fuzz_sqlite_rows.py -max_total_time=60
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _hostile import GARBAGE_BYTES, fuzz, hostile_json, number_text, provider
from fuzz_redis_records import check_info

from conveyor.brokers.sqlite import rows
from conveyor.brokers.sqlite.connection import (
    Synchronous,
    open_connection,
)
from conveyor.brokers.sqlite.queries import queries

NON_UTF8_TEXT = True
# The broker's own get_task columns, for the only row in the table (its queue and id may not be
# text that a parameter can match).
ALL_TASKS = queries()["get_task"].partition("WHERE")[0]

COLUMNS = [
    "seq",
    "queue",
    "id",
    "type",
    "state",
    "payload",
    "encoding",
    "max_retry",
    "retried",
    "token",
    "timeout_s",
    "deadline",
    "retention_s",
    "unique_key",
    "enqueued_at",
    "ready_at",
    "since",
    "lease_expires_at",
    "last_error",
    "last_failed_at",
    "completed_at",
    "result",
]
INTEGER = {"max_retry", "retried", "token"}
REAL = {"timeout_s", "deadline", "retention_s", "enqueued_at", "ready_at", "since",
        "lease_expires_at", "last_failed_at", "completed_at"}  # fmt: skip
BLOB = {"payload", "result"}
NULLABLE = {"timeout_s", "deadline", "unique_key", "lease_expires_at", "last_error",
            "last_failed_at", "completed_at", "result"}  # fmt: skip
TEXT_CHOICES = {
    "state": ["pending", "scheduled", "active", "retry", "archived", "completed", "PENDING", ""],
    "encoding": ["json", "bytes", "JSON", "pickle", ""],
}
REALS = [0.0, -0.0, 1.0, 1.7e9, -1.0, 1e300, -1e300, float("inf"), float("-inf"), 1e20, -1e20,
         253402300800.0, -62135596801.0, 1e-320, 86400.0 * 999999999, 86400.0 * 1e9]  # fmt: skip
INTS = [0, 1, -1, 25, 2**31, 2**63 - 1, -(2**63)]

_db: sqlite3.Connection | None = None


def _connection() -> sqlite3.Connection:
    global _db
    if _db is None:
        folder = tempfile.mkdtemp(prefix="conveyor-fuzz-")
        _db, _ = open_connection(
            Path(folder) / "rows.db", synchronous=Synchronous.NORMAL, busy_timeout_s=1.0
        )
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        atexit.register(_db.close)
    return _db


def _column_value(fdp: Any, name: str) -> tuple[str, Any]:
    """(SQL expression, parameter) for one column."""
    if name in NULLABLE and fdp.ConsumeIntInRange(0, 3) == 0:
        return "?", None
    if name in INTEGER:
        if fdp.ConsumeBool():
            return "?", fdp.PickValueInList(INTS)
        return "?", fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
    if name in REAL:
        if fdp.ConsumeBool():
            return "?", fdp.PickValueInList(REALS)
        value = fdp.ConsumeFloat()
        return "?", 0.0 if value != value else value  # NaN is NULL in SQLite
    if name in BLOB:
        return "?", hostile_json(fdp) if fdp.ConsumeBool() else bytes(fdp.ConsumeBytes(32))
    if name in TEXT_CHOICES and fdp.ConsumeBool():
        return "?", fdp.PickValueInList(TEXT_CHOICES[name])
    if NON_UTF8_TEXT and fdp.ConsumeIntInRange(0, 3) == 0:
        return "CAST(? AS TEXT)", bytes(fdp.PickValueInList(list(GARBAGE_BYTES)))
    if fdp.ConsumeBool():
        return "?", number_text(fdp)
    return "?", fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))


def decode(row: rows.Row) -> None:
    try:
        info = rows.task_info(row)
    except rows.UndecodableRowError:
        return
    check_info(info)


def test_one_input(data: bytes) -> None:
    fdp = provider(data)
    names = [n for n in COLUMNS if n != "seq"]
    chosen = [_column_value(fdp, n) for n in names]
    values = [v for _, v in chosen]
    # As the store reads it: text that is not UTF-8 comes back with U+FFFD (rows.as_text).
    decode((1, *(v.decode(errors="replace") if e != "?" else v for e, v in chosen)))

    conn = _connection()
    conn.execute("DELETE FROM tasks")
    # Column names and "?" / "CAST(? AS TEXT)" from this module only: nothing fuzzed.
    columns, marks = ", ".join(names), ", ".join(expr for expr, _ in chosen)
    sql = f"INSERT INTO tasks ({columns}) VALUES ({marks})"  # noqa: S608
    try:
        conn.execute(sql, values)
    except sqlite3.IntegrityError:  # a NULL where the schema has NOT NULL, e.g. inf - inf
        return
    try:
        row = conn.execute(ALL_TASKS).fetchone()
    except sqlite3.OperationalError as exc:
        assert rows.is_not_utf8(exc), exc
        conn.text_factory = bytes
        try:
            raw = conn.execute(ALL_TASKS).fetchone()
        finally:
            conn.text_factory = str
        assert raw is not None and rows.not_utf8(raw) is not None, raw
        row = rows.as_text(raw)
    assert row is not None
    decode(row)


if __name__ == "__main__":
    fuzz(test_one_input)
