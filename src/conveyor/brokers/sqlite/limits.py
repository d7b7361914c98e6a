"""Flow control for the SQLite broker (see :mod:`conveyor.brokers.limits`).

Limits live in two tables of their own (``limits.sql``), created when a connection opens.
:class:`~.store.Store` calls :func:`admit` inside each enqueue transaction, after the batch is
inserted (a ``QueueFullError`` rolls it back), and :class:`RateBuckets` inside each claim
transaction, so both are as atomic as the step they guard.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, TypeVar, cast

from conveyor.brokers.limits import (
    CONCURRENCY_RECHECK_S,
    DROPPED_ERROR,
    FlowControl,
    Overflow,
    QueueLimit,
    Rate,
    token_index,
)
from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.errors import QueueFullError
from conveyor.message import TaskInfo, TaskMessage

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.broker import SqliteBroker
    from conveyor.brokers.sqlite.store import Store

T = TypeVar("T")


@functools.cache
def queries() -> dict[str, str]:
    """The named queries of ``limits.sql``, read once."""
    text = resources.files(__package__).joinpath("limits.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def _has_token_counts(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "n" for row in conn.execute("PRAGMA table_info(rate_tokens)"))


def create_tables(conn: sqlite3.Connection) -> None:
    """Create the limit tables if missing, and give a file's ``rate_tokens`` its ``n`` column
    if it lacks it (idempotent; run each time a connection opens)."""
    conn.executescript(queries()["create_tables"])
    if _has_token_counts(conn):
        return
    # Checked again under the write lock: processes opening the same file at once add it once.
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _has_token_counts(conn):
            conn.execute(queries()["add_token_counts"])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def admit(conn: sqlite3.Connection, messages: Sequence[TaskMessage], now: float) -> None:
    """Apply the queue limits to a batch just inserted in the current transaction.

    Raises ``QueueFullError`` for the caller to roll back, or archives the oldest pending tasks
    (never the batch's own) to make room for a ``drop_oldest`` queue.
    """
    limits = {row[0]: (row[1], row[2]) for row in conn.execute(queries()["all_queue_limits"])}
    if not limits:
        return
    arriving = Counter(m.queue for m in messages)
    drops: list[int] = []
    for name, n in arriving.items():
        if name not in limits:
            continue
        max_length, overflow = limits[name]
        waiting = conn.execute(queries()["count_waiting"], (name,)).fetchone()[0]
        excess = waiting - max_length
        if excess <= 0:
            continue
        own = {m.id for m in messages if m.queue == name}
        rows = conn.execute(queries()["oldest_pending"], (name, excess + n)).fetchall()
        victims = [seq for seq, task_id in rows if task_id not in own][:excess]
        if overflow != "drop_oldest" or len(victims) < excess:
            first = next(m for m in messages if m.queue == name)
            raise QueueFullError(
                f"queue {name!r} is full ({waiting - n} of {max_length} tasks waiting)",
                task_id=first.id,
                queue=name,
            )
        drops.extend(victims)
    conn.executemany(queries()["drop_task"], [(DROPPED_ERROR, now, seq) for seq in drops])


class RateBuckets:
    """The rate limits of one claim transaction, read once. A type's tokens out are counted
    when the claim first meets the type (the ones back deleted), and the tokens this claim
    takes are written at the end, one row per type."""

    def __init__(
        self, conn: sqlite3.Connection, now: float, rates: dict[str, tuple[Rate, int | None]]
    ) -> None:
        self._conn = conn
        self._now = now
        self._rates = {name: rate for name, (rate, _) in rates.items()}
        self._stored = {name: out for name, (_, out) in rates.items()}  # rate_out, None: not kept
        self._out: dict[str, int] = {}  # tokens out per type, those taken by this claim included
        self._taken: Counter[str] = Counter()
        self._held: Counter[str] = Counter()

    def __bool__(self) -> bool:
        return bool(self._rates)

    def held_until(self, task_type: str) -> float | None:
        """Take a token for a task of ``task_type``: ``None`` when it may start, else the
        broker time it may start at."""
        rate = self._rates.get(task_type)
        if rate is None:
            return None
        back = self._now - rate.period_s
        if task_type not in self._out:
            dropped = self._conn.execute(queries()["drop_tokens_back"], (task_type, back))
            stored = self._stored.get(task_type)
            back_n = sum(row[0] for row in dropped)
            out = -1 if stored is None else stored - back_n
            # The kept count saves counting the tokens while the bucket is far from empty; from
            # half the count on, where it may decide, they are counted (and the count kept
            # again), so a count gone wrong (an earlier version's claims do not keep it) never
            # lets more start than the rate allows.
            if out < 0 or 2 * out >= rate.count:
                count = self._conn.execute(queries()["count_tokens_out"], (task_type, back))
                out = count.fetchone()[0]
            self._out[task_type] = out
        out, ahead = self._out[task_type], self._held[task_type]
        if out < rate.count and ahead == 0:
            self._out[task_type] += 1
            self._taken[task_type] += 1
            return None
        self._held[task_type] += 1
        rounds, index = token_index(rate, out, ahead)
        row = self._conn.execute(queries()["token_out"], (task_type, back, index)).fetchone()
        taken_at = self._now if row is None else row[0]  # not stored yet: taken by this claim
        return taken_at + rate.period_s * (rounds + 1)

    def holds_back(self, seq: int, task_type: str) -> bool:
        """Whether the task (row ``seq``) is over its type's rate: then it was made SCHEDULED
        until its token, in this transaction."""
        until = self.held_until(task_type)
        if until is None:
            return False
        self._conn.execute(queries()["hold_task"], (until, self._now, seq))
        return True

    def save(self) -> None:
        """Record the tokens this claim took, and how many are out per type it met."""
        if not self._out:
            return  # no rate-limited task met
        self._conn.executemany(
            queries()["take_tokens"], [(t, self._now, n) for t, n in self._taken.items() if n]
        )
        self._conn.executemany(queries()["save_rate_out"], self._out.items())


class ClaimGate:
    """Every limit a claim transaction obeys: rate limits (:class:`RateBuckets`) and
    concurrency limits, read once. Concurrency is counted from the tasks' states (ACTIVE rows,
    once per claim and limit met), plus what this transaction starts."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self._conn = conn
        self._now = now
        # One statement for every limit (and a rate's tokens out): a claim with none set pays
        # for one small read.
        limits = conn.execute(queries()["all_claim_limits"]).fetchall()
        rates = {row[1]: (Rate(row[2], row[3]), row[4]) for row in limits if row[0] == "rate"}
        self._buckets = RateBuckets(conn, now, rates)
        self._types = {row[1]: row[2] for row in limits if row[0] == "type"}
        self._queues = {row[1]: row[2] for row in limits if row[0] == "queue"}
        self._active: dict[tuple[str, str], int] = {}
        self._any_held: bool | None = None

    def __bool__(self) -> bool:
        return bool(self._buckets or self._types or self._queues)

    def _count(self, kind: str, name: str) -> int:
        key = (kind, name)
        if key not in self._active:
            query = queries()["active_of_type" if kind == "type" else "active_in_queue"]
            self._active[key] = self._conn.execute(query, (name,)).fetchone()[0]
        return self._active[key]

    def room(self, queue: str) -> int:
        """How many tasks ``queue`` may start now; first, its tasks held for a slot of their
        type that is free again go back to pending, at their old ready time."""
        if self._types and self._any_held is None:
            self._any_held = self._conn.execute(queries()["any_held"]).fetchone() is not None
        for task_type, n in self._types.items() if self._any_held else ():
            free = n - self._count("type", task_type)
            if free <= 0:
                continue
            held = self._conn.execute(queries()["held_in_order"], (queue, task_type, free))
            for seq, task_id, ready_at in held.fetchall():
                self._conn.execute(queries()["unhold_task"], (seq, ready_at, self._now, task_id))
                self._conn.execute(queries()["forget_held"], (seq,))
        n = self._queues.get(queue)
        return sys.maxsize if n is None else n - self._count("queue", queue)

    def holds_back(self, seq: int, info: TaskInfo) -> bool:
        """Whether the task (row ``seq``) must wait: its type is at its concurrency limit, or
        over its rate. Then it was made SCHEDULED, in this transaction; else it counts as
        started."""
        n = self._types.get(info.type)
        if n is not None and self._count("type", info.type) >= n:
            ready = info.next_process_at
            ready_at = self._now if ready is None else ready.timestamp()
            self._conn.execute(
                queries()["hold_task"], (self._now + CONCURRENCY_RECHECK_S, self._now, seq)
            )
            self._conn.execute(
                queries()["hold_for_slot"], (seq, info.queue, info.id, info.type, ready_at)
            )
            return True
        if self._buckets.holds_back(seq, info.type):
            return True
        for key in (("type", info.type), ("queue", info.queue)):
            if key[1] in (self._types if key[0] == "type" else self._queues):
                self._active[key] = self._count(*key) + 1
        return False

    def save(self) -> None:
        """Record the rate-limit tokens this claim took."""
        self._buckets.save()


def slots_watched(conn: sqlite3.Connection, queues: set[str]) -> bool:
    """Whether tasks leaving ACTIVE in ``queues`` may let another start (a queue was at its
    concurrency limit, or a task is held for a slot): then idle workers are woken, to claim
    at once."""
    if conn.execute(queries()["any_concurrency"]).fetchone() is None:
        return False  # no limit, so no task held either (a removed limit forgets its held)
    names = json.dumps(sorted(queues))
    return bool(conn.execute(queries()["slots_watched"], (names,)).fetchone()[0])


def any_concurrency(conn: sqlite3.Connection) -> bool:
    """Whether any concurrency limit is set (else an idle wait skips the checks below)."""
    return conn.execute(queries()["any_concurrency"]).fetchone() is not None


def slot_free(conn: sqlite3.Connection, queue: str) -> bool:
    """Whether a task of ``queue`` held for a slot of its type could take one now."""
    return conn.execute(queries()["slot_free"], (queue,)).fetchone() is not None


def full_queues(conn: sqlite3.Connection) -> set[str]:
    """The queues at their concurrency limit."""
    return {row[0] for row in conn.execute(queries()["full_queues"])}


class SqliteLimits:
    """The :class:`~conveyor.brokers.limits.FlowControl` methods of the SQLite broker."""

    if TYPE_CHECKING:

        async def _run(self, operation: Callable[[Store], T]) -> T: ...

    async def set_queue_limit(self, queue: str, limit: QueueLimit | None) -> None:
        """Set or remove ``queue``'s length limit."""

        def write(store: Store) -> None:
            with store.write():
                if limit is None:
                    store.conn.execute(queries()["remove_queue_limit"], (queue,))
                else:
                    store.conn.execute(
                        queries()["set_queue_limit"], (queue, limit.max_length, limit.overflow)
                    )

        await self._run(write)

    async def queue_limit(self, queue: str) -> QueueLimit | None:
        """``queue``'s length limit, or ``None``."""

        def read(store: Store) -> QueueLimit | None:
            row = store.conn.execute(queries()["queue_limit"], (queue,)).fetchone()
            if row is None:
                return None
            return QueueLimit(max_length=row[0], overflow=cast(Overflow, row[1]))

        return await self._run(read)

    async def set_rate_limit(self, task_type: str, rate: Rate | None) -> None:
        """Set or remove ``task_type``'s rate limit."""

        def write(store: Store) -> None:
            with store.write():
                if rate is None:
                    store.conn.execute(queries()["remove_rate_limit"], (task_type,))
                    store.conn.execute(queries()["remove_rate_tokens"], (task_type,))
                    store.conn.execute(queries()["remove_rate_out"], (task_type,))
                else:
                    store.conn.execute(
                        queries()["set_rate_limit"], (task_type, rate.count, rate.period_s)
                    )

        await self._run(write)

    async def rate_limits(self) -> dict[str, Rate]:
        """Every task type's rate limit."""

        def read(store: Store) -> dict[str, Rate]:
            rows = store.conn.execute(queries()["all_rate_limits"]).fetchall()
            return {row[0]: Rate(row[1], row[2]) for row in rows}

        return await self._run(read)

    async def _set_concurrency(self, kind: str, name: str, max_active: int | None) -> None:
        def write(store: Store) -> None:
            with store.write():
                if max_active is None:
                    store.conn.execute(queries()["remove_concurrency"], (kind, name))
                    if kind == "type":  # its held tasks start when due, like any scheduled one
                        store.conn.execute(queries()["forget_held_of_type"], (name,))
                else:
                    store.conn.execute(queries()["set_concurrency"], (kind, name, max_active))

        await self._run(write)

    async def _concurrency(self, kind: str) -> dict[str, int]:
        def read(store: Store) -> dict[str, int]:
            rows = store.conn.execute(queries()["all_concurrency"]).fetchall()
            return {name: n for k, name, n in rows if k == kind}

        return await self._run(read)

    async def set_task_concurrency(self, task_type: str, max_active: int | None) -> None:
        """Set or remove ``task_type``'s concurrency limit."""
        await self._set_concurrency("type", task_type, max_active)

    async def task_concurrency(self) -> dict[str, int]:
        """Every task type's concurrency limit."""
        return await self._concurrency("type")

    async def set_queue_concurrency(self, queue: str, max_active: int | None) -> None:
        """Set or remove ``queue``'s concurrency limit."""
        await self._set_concurrency("queue", queue, max_active)

    async def queue_concurrency(self, queue: str) -> int | None:
        """``queue``'s concurrency limit, or ``None``."""
        return (await self._concurrency("queue")).get(queue)


def _conforms(b: SqliteBroker) -> FlowControl:
    return b
