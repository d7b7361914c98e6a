"""Opening the database (pragmas, schema) and mapping sqlite3 errors to conveyor's, in one place."""

from __future__ import annotations

import sqlite3
import time
from enum import StrEnum
from pathlib import Path

from conveyor.brokers.protocol import recover_spread
from conveyor.brokers.sqlite import checkpoint, limits, throughput, workflows
from conveyor.brokers.sqlite.headers import add_column as add_headers_column
from conveyor.brokers.sqlite.history import create_history_table
from conveyor.brokers.sqlite.progress import create_progress_table
from conveyor.brokers.sqlite.queries import SCHEMA_VERSION, schema_script
from conveyor.brokers.sqlite.results import create_tables as create_result_tables
from conveyor.brokers.sqlite.schedules import apply_schema as apply_schedules_schema
from conveyor.brokers.sqlite.workers import create_tables as create_worker_tables
from conveyor.errors import BrokerError, BrokerUnavailableError


class Synchronous(StrEnum):
    """How hard a commit pushes data to disk (``PRAGMA synchronous``) in WAL mode."""

    FULL = "full"
    """fsync the WAL on every commit: an acknowledged enqueue survives power loss."""
    NORMAL = "normal"
    """fsync at checkpoints only: survives a process crash; power loss may undo recent commits."""


# PRAGMAs take no bound parameters, so each setting is a fixed statement, never a formatted one.
SYNCHRONOUS_PRAGMA = {
    Synchronous.FULL: "PRAGMA synchronous = FULL",
    Synchronous.NORMAL: "PRAGMA synchronous = NORMAL",
}

# Primary result codes meaning "the database cannot be used right now; try again later".
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_READONLY,
    }
)


def broker_error(exc: sqlite3.Error, location: Path) -> BrokerError:
    """The conveyor error for a sqlite3 error: the single place where they are translated."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    message = f"sqlite broker at {str(location)!r}: {exc}"
    if primary in _UNAVAILABLE:
        return BrokerUnavailableError(message)
    return BrokerError(message)


def _enable_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> str:
    """Switch to WAL and return the mode granted, retrying while another opener holds the lock.

    Processes opening a brand-new file at the same moment race to convert it, and the loser's
    ``PRAGMA journal_mode`` fails with SQLITE_BUSY at once instead of waiting in the busy
    handler; so it waits here, as long as any other write would.
    """
    deadline = time.monotonic() + busy_timeout_s
    pause = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(pause)  # a lock held by another process: there is nothing to wait on
        pause = min(pause * 2, 0.05)


# Columns added after version 3 (name, definition): ALTER TABLE has no IF NOT EXISTS.
_ADDED_COLUMNS = (("crashes", "INTEGER NOT NULL DEFAULT 0"),)


def _add_columns(conn: sqlite3.Connection) -> None:
    """Add the columns an older file lacks and set the version, in one write transaction.

    The check runs under the write lock, so processes upgrading the same file at once add each
    column once; the version is set only with the columns, so no process sees version 4 on a
    table that lacks them.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        present = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        for name, definition in _ADDED_COLUMNS:
            if name not in present:
                # Constants of this module only: nothing from outside reaches this statement.
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {name} {definition}")
        conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _recover_spread(stored_id: bytes, crash: int) -> float:
    """:func:`~conveyor.brokers.protocol.recover_spread` of a task id passed as its stored bytes
    (``CAST(id AS BLOB)``): sqlite3 cannot pass a TEXT argument that is not UTF-8 as ``str``,
    and the whole recovery would fail on one such id."""
    return recover_spread(stored_id.decode(errors="replace"), crash)


_CONCERN_TABLES = (
    workflows.apply_schema,
    throughput.create_table,
    create_progress_table,
    create_history_table,
    apply_schedules_schema,
    create_worker_tables,
    add_headers_column,
    limits.create_tables,
    create_result_tables,
)


def open_connection(
    path: Path, *, synchronous: Synchronous, busy_timeout_s: float
) -> tuple[sqlite3.Connection, str]:
    """Open (creating if needed) the database, apply pragmas and the schema.

    Returns the connection (in autocommit mode: transactions are explicit) and the journal mode
    SQLite actually granted (``wal`` unless the file system cannot do WAL). Its commits
    checkpoint the WAL only past :data:`~.checkpoint.SAFETY_FRAMES` frames: the broker's
    :class:`~.checkpoint.Checkpointer` does it in the background.

    Raises:
        sqlite3.Error: for the caller to translate with :func:`broker_error`.
        BrokerError: the file was created by a newer conveyor (unknown schema version).
    """
    # ``timeout`` installs SQLite's busy handler: a writer waits for the lock instead of failing.
    # The connection is used by the database thread and by blocking callers running inline, one
    # at a time under the DatabaseThread's lock, hence check_same_thread=False.
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout_s,
        isolation_level=None,
        cached_statements=256,
        check_same_thread=False,
    )
    # The recovery query spreads due times exactly as the other backends do.
    conn.create_function("recover_spread", 2, _recover_spread, deterministic=True)
    try:
        journal_mode = _enable_wal(conn, busy_timeout_s)
        conn.execute(SYNCHRONOUS_PRAGMA[synchronous])
        conn.execute("PRAGMA temp_store = MEMORY")
        # Integers from our own constants: nothing from outside reaches these statements.
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(checkpoint.SAFETY_FRAMES)}")
        conn.execute(f"PRAGMA journal_size_limit = {int(checkpoint.WAL_SIZE_LIMIT)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            conn.executescript(schema_script())
            _add_columns(conn)
        elif version > SCHEMA_VERSION:
            raise BrokerError(
                f"sqlite broker at {str(path)!r} has schema version {version}; this conveyor "
                f"knows version {SCHEMA_VERSION} (upgrade conveyor)"
            )
        # Tables of the concerns beside the task lifecycle: each creates its own, idempotently.
        for create_tables in _CONCERN_TABLES:
            create_tables(conn)
    except BaseException:
        conn.close()
        raise
    return conn, journal_mode
