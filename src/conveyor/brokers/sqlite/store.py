"""The SQLite broker's transactions, run synchronously on the broker's database thread.

Each public method is one transaction on one connection. Write transactions start with
``BEGIN IMMEDIATE`` (take the write lock up front, so two processes never claim the same row and
no transaction has to upgrade a read lock, which SQLite could only resolve by failing), then read
the broker clock once: every time written in that transaction is that ``now``.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from conveyor.brokers.protocol import (
    DAILY_TOTALS_KEPT_DAYS,
    LEASE_EXPIRED_ERROR,
    crash_limit_error,
)
from conveyor.brokers.sqlite import limits, results, rows, throughput, workflows
from conveyor.brokers.sqlite.headers import store_headers
from conveyor.brokers.sqlite.locking import begin_immediate
from conveyor.brokers.sqlite.queries import queries
from conveyor.errors import (
    BrokerError,
    DuplicateTaskError,
    LeaseLostError,
    QueueFullError,
    TaskIdConflictError,
)
from conveyor.message import Completion, Lease, TaskInfo, TaskMessage, TaskState, to_datetime

_NO_TIME = timedelta(0)

logger = logging.getLogger(__name__)

Q = queries()


def utc_day(ts: float) -> str:
    """The UTC calendar day (YYYY-MM-DD) of a broker timestamp: the key of the daily totals."""
    global _last_day
    day, last = int(ts // 86400), _last_day  # UTC days are 86,400 s long in POSIX time
    if day != last[0]:  # every transaction asks; the day changes once a day
        last = _last_day = (day, datetime.fromtimestamp(ts, UTC).date().isoformat())
    return last[1]


_last_day: tuple[int, str] = (-(2**62), "")  # the day last named (one tuple: read atomically)


def _new_info(
    m: TaskMessage, state: TaskState, enqueued_at: datetime | None, ready_at: datetime | None
) -> TaskInfo:
    return TaskInfo.from_message(m, state=state, enqueued_at=enqueued_at, next_process_at=ready_at)


def _ready_order(row: rows.Row) -> tuple[float, int]:
    return row[rows.READY_AT], row[rows.SEQ]


Leased = tuple[str, str, int, float]
"""A new task stored ACTIVE under a lease, as a claim would leave it: its id, queue, fencing
token and lease expiry (broker clock)."""


class _Conflict(Exception):
    """An optimistic insert hit a constraint; the exact check names the error to raise."""


class Store:
    """Every broker transaction, on a connection owned by the calling (database) thread.

    Args:
        conn: an autocommit connection from :func:`~.connection.open_connection`.
        clock: the broker clock (seconds since the epoch), read once per transaction.
        on_ready: called after a commit that may have made a task ready to claim now.
        on_commit: called after every committed write transaction (nudges the checkpointer).
        busy_timeout_s: how long a write transaction waits for the write lock held elsewhere.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        clock: Callable[[], float],
        on_ready: Callable[[], None],
        on_commit: Callable[[], None] = lambda: None,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.conn = conn
        self._busy_timeout_s = busy_timeout_s
        self._on_commit = on_commit
        self._clock = clock
        self.notify_ready = on_ready
        """Wake waiters here and in other processes (call after the commit, never inside)."""
        self.chained: set[int] = set()
        """Fencing tokens of chain steps leased by their parent's settlement (an eager
        continuation) and not settled since: their settlements run at once when they can (see
        :meth:`SqliteBroker._run_at_once`). Read from the event loop's thread too (a set's
        ``in`` and ``add`` are atomic); cleared should lost leases pile up."""

    # -- transactions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self, *, wait: bool = True) -> Iterator[float]:
        """A write transaction; yields the broker clock read once, after the lock is held.

        Raises:
            LockBusy: ``wait`` is false and another connection holds the write lock.
        """
        begin_immediate(self.conn, self._busy_timeout_s, wait=wait)
        try:
            yield self._clock()
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        else:
            self._on_commit()

    @contextlib.contextmanager
    def read(self) -> Iterator[float]:
        """A read transaction: one consistent snapshot for several queries."""
        self.conn.execute("BEGIN")
        try:
            yield self._clock()
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def text_as_bytes(self) -> Iterator[None]:
        """Fetch TEXT values as bytes (never on the normal path: only after a failed fetch)."""
        self.conn.text_factory = bytes
        try:
            yield
        finally:
            self.conn.text_factory = str

    def fetch(
        self, query: str, params: Sequence[object] = (), text: Sequence[int] = rows.TEXT
    ) -> list[rows.Row]:
        """Every row of a read query. Values of the ``text`` columns that are not UTF-8 (which
        make sqlite3 fail the whole fetch) come back with U+FFFD instead, and are logged.

        The normal fetch runs unchanged; only when it fails that way is the query run again
        with TEXT fetched as bytes (see :mod:`.rows`).
        """
        try:
            return self.conn.execute(query, params).fetchall()
        except sqlite3.OperationalError as exc:
            if not rows.is_not_utf8(exc):
                raise
        with self.text_as_bytes():
            raw = self.conn.execute(query, params).fetchall()
        found = [rows.as_text(row, text) for row in raw]
        logger.warning(
            "read %d rows, some with stored text that is not UTF-8, shown with U+FFFD",
            len(found),
        )
        return found

    def _count(self, counts: Counter[tuple[str, bool]], now: float) -> None:
        """Add outcomes (queue, failed) to today's processed/failed totals."""
        day = utc_day(now)
        by_queue: dict[str, list[int]] = {}
        for (queue, failed), n in counts.items():
            totals = by_queue.setdefault(queue, [0, 0])
            totals[0] += n
            totals[1] += n if failed else 0
        self.conn.executemany(
            Q["count_outcomes"], [(q, day, p, f) for q, (p, f) in by_queue.items()]
        )
        throughput.count(self.conn, by_queue, now)

    # -- producing -----------------------------------------------------------------------------

    def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """Store tasks, all or nothing (see :meth:`Broker.enqueue`).

        Inserts optimistically (executemany, no per-message lookups); only when a constraint
        trips does it roll back and check message by message under the write lock, raising the
        same error for the same message as the memory broker.
        """
        if not messages:
            return []
        try:
            with self.write() as now:
                infos = self._insert_fast(messages, now)
                limits.admit(self.conn, messages, now)
        except (_Conflict, sqlite3.IntegrityError):
            with self.write() as now:
                self._check_new(messages, now, owner=None)
                infos = self._insert_fast(messages, now)  # the conflict went away meanwhile
                limits.admit(self.conn, messages, now)
        if any(i.state is TaskState.PENDING for i in infos):
            self.notify_ready()
        return infos

    def enqueue_groups(
        self, groups: Sequence[Sequence[TaskMessage]]
    ) -> list[list[TaskInfo] | Exception]:
        """Several enqueue calls in one transaction, each still all or nothing on its own.

        A call that conflicts gets its error (the same as :meth:`enqueue` would raise) and
        stores nothing; the others are committed together, paying for one commit.
        """
        outcomes: list[list[TaskInfo] | Exception] = []
        with self.write() as now:
            for messages in groups:
                try:
                    outcomes.append(self._insert(messages, now, owner=None))
                except (TaskIdConflictError, DuplicateTaskError, QueueFullError) as exc:
                    outcomes.append(exc)
        if any(
            info.state is TaskState.PENDING
            for infos in outcomes
            if isinstance(infos, list)
            for info in infos
        ):
            self.notify_ready()
        return outcomes

    def _insert(
        self,
        messages: Sequence[TaskMessage],
        now: float,
        owner: tuple[str, str] | None,
        *,
        infos: bool = True,
        leased: Leased | None = None,
    ) -> list[TaskInfo]:
        """Insert messages inside the current transaction, or raise the exact enqueue error;
        their infos (none unless ``infos``: a workflow's steps, a completion's successors).
        The message ``leased`` names is stored ACTIVE under that lease (see :data:`Leased`)."""
        self.conn.execute("SAVEPOINT enqueue")
        try:
            stored = self._insert_fast(messages, now, infos=infos, leased=leased)
            if owner is None:  # queue limits apply to enqueues, not to a completion's successors
                limits.admit(self.conn, messages, now)
        except (_Conflict, sqlite3.IntegrityError):
            self.conn.execute("ROLLBACK TO enqueue")
            self.conn.execute("RELEASE enqueue")
            self._check_new(messages, now, owner)
            raise BrokerError("enqueue hit a constraint the exact check did not find") from None
        except QueueFullError:
            self.conn.execute("ROLLBACK TO enqueue")
            self.conn.execute("RELEASE enqueue")
            raise
        self.conn.execute("RELEASE enqueue")
        return stored

    def _insert_fast(
        self,
        messages: Sequence[TaskMessage],
        now: float,
        *,
        infos: bool = True,
        leased: Leased | None = None,
    ) -> list[TaskInfo]:
        if len({(m.queue, m.id) for m in messages}) != len(messages):
            raise _Conflict
        stored: list[TaskInfo] = []
        params = []
        at_now = to_datetime(now)  # shared by every immediate task: one conversion per batch
        for m in messages:
            if leased is not None and m.id == leased[0] and m.queue == leased[1]:
                # Never scheduled (a continued step runs now), and its info is the caller's.
                self.conn.execute(
                    Q["insert_leased_task"],
                    (m.queue, m.id, m.type, m.payload, m.encoding.value, m.max_retry,
                     m.timeout_s, m.deadline, m.retention_s, m.unique_key, now, now, now,
                     leased[2], leased[3]),
                )  # fmt: skip
                continue
            due = m.process_at
            if due is None and m.process_in_s is not None:
                due = now + m.process_in_s
            if due is not None and due > now:
                state, ready_at = TaskState.SCHEDULED, due
            else:
                state, ready_at = TaskState.PENDING, now
            params.append(
                (m.queue, m.id, m.type, state.value, m.payload, m.encoding.value, m.max_retry,
                 m.timeout_s, m.deadline, m.retention_s, m.unique_key, now, ready_at, now)
            )  # fmt: skip
            if infos:
                ready = at_now if ready_at == now else to_datetime(ready_at)
                stored.append(_new_info(m, state, at_now, ready))
        self.conn.executemany(Q["insert_task"], params)
        store_headers(self.conn, messages)
        for m in messages:
            if m.unique_key is not None:
                expires = None if m.unique_ttl_s is None else now + m.unique_ttl_s
                taken = self.conn.execute(
                    Q["take_unique_lock"], (m.queue, m.unique_key, m.id, expires, now)
                ).fetchone()
                if taken is None:
                    raise _Conflict
        # Every time, not cached: another process may have deleted the queue (delete_queue).
        self.conn.executemany(
            Q["add_queue"], [(q,) for q in dict.fromkeys(m.queue for m in messages)]
        )
        return stored

    def _check_new(
        self, messages: Sequence[TaskMessage], now: float, owner: tuple[str, str] | None
    ) -> None:
        """Raise the first conflict, message by message, exactly as the memory broker does."""
        ids: set[tuple[str, str]] = set()
        keys: set[tuple[str, str]] = set()
        for m in messages:
            stored = self.conn.execute(Q["task_exists"], (m.queue, m.id)).fetchone()
            if (m.queue, m.id) in ids or stored is not None:
                raise TaskIdConflictError(
                    f"task {m.id!r} already exists in queue {m.queue!r}",
                    task_id=m.id,
                    queue=m.queue,
                )
            ids.add((m.queue, m.id))
            if m.unique_key is None:
                continue
            held = self.conn.execute(Q["unique_lock_held"], (m.queue, m.unique_key, now)).fetchone()
            # A completing task (``owner``: queue, id) may pass its own lock to its successors.
            mine = (
                held is not None
                and owner is not None
                and (m.queue, held[0])
                == (
                    owner[0],
                    owner[1].encode(),
                )
            )
            if (m.queue, m.unique_key) in keys or (held is not None and not mine):
                raise DuplicateTaskError(
                    f"unique key {m.unique_key!r} is held in queue {m.queue!r}",
                    task_id=m.id,
                    queue=m.queue,
                )
            keys.add((m.queue, m.unique_key))

    # -- consuming -----------------------------------------------------------------------------

    def claim(self, queues: Sequence[str], limit: int, lease_s: float) -> list[Lease]:
        """Claim up to ``limit`` ready tasks (see :meth:`Broker.claim`)."""
        if limit <= 0:
            return []
        leases: list[Lease] = []
        with self.write() as now:
            paused = {r[0] for r in self.fetch(Q["paused_queues"], text=(0,))}
            gate = limits.ClaimGate(self.conn, now)
            for queue in dict.fromkeys(queues):
                if queue not in paused:
                    self._claim_from(queue, limit, now, now + lease_s, leases, gate)
                if len(leases) >= limit:
                    break
            gate.save()
        return leases

    def _claim_from(
        self,
        queue: str,
        limit: int,
        now: float,
        expires: float,
        leases: list[Lease],
        gate: limits.ClaimGate,
    ) -> None:
        room = gate.room(queue)  # its concurrency limit
        while len(leases) < limit and room > 0:
            wanted = min(limit - len(leases), room)
            try:
                pending = self.conn.execute(Q["claim_pending"], (queue, wanted)).fetchall()
                due = self.conn.execute(Q["claim_due"], (queue, now, wanted)).fetchall()
            except sqlite3.OperationalError as exc:
                if not rows.is_not_utf8(exc) or not self._archive_not_utf8(queue, now, wanted):
                    raise
                continue  # with the damaged rows archived, the same queries now read
            # Both lists are in (ready_at, seq) order; FIFO across them is their merge.
            found = list(heapq.merge(pending, due, key=_ready_order))[:wanted]
            decoded = []
            for row in found:
                try:
                    decoded.append((row[rows.SEQ], rows.task_info(row)))
                except rows.UndecodableRowError as exc:
                    self._archive_undecodable(row, str(exc), now)
            if gate:  # tasks over a concurrency or rate limit wait, SCHEDULED
                decoded = [d for d in decoded if not gate.holds_back(d[0], d[1])]
            room -= len(decoded)
            if decoded:
                last = self.conn.execute(Q["mint_tokens"], (len(decoded),)).fetchone()[0]
                first = last - len(decoded) + 1
                claimed = []
                for token, (seq, info) in enumerate(decoded, start=first):
                    claimed.append((token, expires, now, seq))
                    info = replace(info, state=TaskState.ACTIVE, next_process_at=None)
                    leases.append(Lease(task=info, token=token, expires_at=expires))
                self.conn.executemany(Q["claim_task"], claimed)
            # Only archived (undecodable) or held-back rows make a full page come back short.
            if len(found) < wanted or len(decoded) == len(found):
                return

    def _archive_not_utf8(self, queue: str, now: float, wanted: int) -> int:
        """Archive, with the reason, the rows among a claim's candidates whose TEXT is not
        UTF-8 (sqlite3 cannot fetch them as str); return how many."""
        with self.text_as_bytes():
            found = self.conn.execute(Q["claim_pending"], (queue, wanted)).fetchall()
            found += self.conn.execute(Q["claim_due"], (queue, now, wanted)).fetchall()
        archived = 0
        for row in found:
            why = rows.not_utf8(row)
            if why is not None:
                self._archive_undecodable(rows.as_text(row), why, now)
                archived += 1
        return archived

    def _archive_undecodable(self, row: rows.Row, why: str, now: float) -> None:
        reason = f"undecodable task record: {why}"
        self.conn.execute(Q["archive_undecodable"], (reason, now, row[rows.SEQ]))
        logger.error(
            "archived an undecodable task: %s",
            why,
            extra={"task_id": row[rows.ID], "queue": row[rows.QUEUE]},
        )

    def probe(self, queues: Sequence[str]) -> tuple[bool, float | None]:
        """Whether a task is ready now in an unpaused queue, and the earliest due time."""
        with self.read() as now:
            paused = {r[0] for r in self.fetch(Q["paused_queues"], text=(0,))}
            limited = limits.any_concurrency(self.conn)
            if limited:
                paused |= limits.full_queues(self.conn)  # at their limit: nothing ready there
            open_queues = [q for q in dict.fromkeys(queues) if q not in paused]
            if any(self.conn.execute(Q["has_pending"], (q,)).fetchone() for q in open_queues):
                return True, now
            if limited and any(limits.slot_free(self.conn, q) for q in open_queues):
                return True, now
            times = [self.conn.execute(Q["next_due_at"], (q,)).fetchone()[0] for q in open_queues]
        earliest = min((t for t in times if t is not None), default=None)
        return (earliest is not None and earliest <= now), earliest

    def extend_leases(self, leases: Sequence[Lease], lease_s: float) -> list[bool]:
        """Push held leases to ``now + lease_s``; ``False`` for each lost one."""
        with self.write() as now:
            return [
                self.conn.execute(
                    Q["extend_lease"], (now + lease_s, le.task.queue, le.task.id, le.token)
                ).rowcount
                == 1
                for le in leases
            ]

    def complete(self, completions: Sequence[Completion]) -> list[bool]:
        """Record successes with their successors (see :meth:`Broker.complete`).

        On a successor conflict the completions before it are committed, and the error is raised
        for that one (which, like any after it, is not applied), as in the memory broker.
        """
        done: list[bool] = []
        ready = False
        failure: Exception | None = None
        with self.write() as now:
            counts: Counter[tuple[str, bool]] = Counter()
            for c in completions:
                try:
                    applied = self._complete_one(c, now)
                except (TaskIdConflictError, DuplicateTaskError) as exc:
                    failure = exc
                    break
                done.append(applied)
                if applied:
                    counts[(c.lease.task.queue, False)] += 1
                    ready = ready or bool(c.successors) or self._waited(c.lease.task)
            self._count(counts, now)
            queues = {c.lease.task.queue for c in completions}
            ready = ready or limits.slots_watched(self.conn, queues)  # a freed slot may start one
        if ready:
            self.notify_ready()
        if failure is not None:
            raise failure
        return done

    def _complete_one(self, c: Completion, now: float) -> bool:
        task = c.lease.task
        found = self.conn.execute(Q["find_leased"], (task.queue, task.id, c.lease.token)).fetchone()
        if found is None:
            return False
        seq, has_unique_key, retention_s = found
        # Successors are inserted while the completing task still exists, so one reusing its id
        # conflicts (as in the memory broker); a conflict also undoes the lock release.
        self.conn.execute("SAVEPOINT completion")
        try:
            if has_unique_key:
                self.conn.execute(Q["release_task_lock"], (seq,))
            if c.successors:
                self._insert(c.successors, now, owner=(task.queue, task.id), infos=False)
        except BaseException:
            self.conn.execute("ROLLBACK TO completion")
            self.conn.execute("RELEASE completion")
            raise
        self.conn.execute("RELEASE completion")
        self._completed(seq, c.result, retention_s, now)
        return True

    def _completed(self, seq: int, result: bytes | None, retention_s: float, now: float) -> None:
        """The row of a task just completed: kept COMPLETED with its result for its retention,
        else deleted."""
        if retention_s > 0:
            self.conn.execute(Q["complete_retained"], (result, now, seq))
        else:
            self.conn.execute(Q["delete_task"], (seq,))

    def retry(self, lease: Lease, error: str, delay_s: float) -> None:
        """Record a failed attempt; RETRY due in ``delay_s`` (raises LeaseLostError)."""
        with self.write() as now:
            args = (now + delay_s, error, now, lease.task.queue, lease.task.id, lease.token)
            self._leased(Q["retry_leased"], args, lease)
            self._count(Counter({(lease.task.queue, True): 1}), now)
            watched = limits.slots_watched(self.conn, {lease.task.queue})  # a freed slot
        if delay_s <= 0 or watched:
            self.notify_ready()

    def archive(self, lease: Lease, error: str) -> None:
        """Record a failed attempt and archive the task (raises LeaseLostError)."""
        with self.write() as now:
            args = (error, now, lease.task.queue, lease.task.id, lease.token)
            self._leased(Q["archive_leased"], args, lease)
            self._count(Counter({(lease.task.queue, True): 1}), now)
            workflows.fail_step(self, lease.task.id, error, now)  # a step fails its workflow
            watched = limits.slots_watched(self.conn, {lease.task.queue})
            waited = self._waited(lease.task)
        if watched or waited:  # a freed slot may start a task; a waiter wants the outcome
            self.notify_ready()

    def release(self, lease: Lease) -> None:
        """Give the task back at the front of its queue (raises LeaseLostError)."""
        with self.write() as now:
            args = (now, lease.task.queue, lease.task.id, lease.token)
            self._leased(Q["release_leased"], args, lease)
        self.notify_ready()

    def _waited(self, task: TaskInfo) -> bool:
        """Whether a call waits on this retained task's result (client.wait): then its end
        wakes waiters after the commit, as new work does."""
        return task.retention > _NO_TIME and results.is_waited(self, task.queue, task.id)

    def _leased(self, query: str, args: tuple[object, ...], lease: Lease) -> None:
        if self.conn.execute(query, args).rowcount != 1:
            raise LeaseLostError(task_id=lease.task.id, queue=lease.task.queue)

    def recover_expired(self, delay_s: float, max_crashes: int) -> int:
        """Fail every ACTIVE task whose lease lapsed; return how many."""
        try:
            lapsed = self._recover(delay_s, max_crashes)
        except sqlite3.OperationalError as exc:
            if not rows.is_not_utf8(exc):
                raise
            # A queue name that is not UTF-8 (the transaction was rolled back): count its
            # recovered tasks under the name with U+FFFD.
            with self.text_as_bytes():
                lapsed = self._recover(delay_s, max_crashes)
        if lapsed:
            logger.warning("recovered %d tasks whose lease expired", len(lapsed))
            if delay_s <= 0:
                self.notify_ready()
        return len(lapsed)

    def _recover(self, delay_s: float, max_crashes: int) -> list[str]:
        crash_error = crash_limit_error(max_crashes)
        with self.write() as now:
            args = (LEASE_EXPIRED_ERROR, now, delay_s, max_crashes, crash_error)
            found = self.conn.execute(Q["recover_expired"], args).fetchall()
            lapsed = [q if isinstance(q, str) else q.decode(errors="replace") for (q,) in found]
            self._count(Counter((q, True) for q in lapsed), now)
            if lapsed:  # archived workflow steps fail their workflows in this transaction
                workflows.fail_archived_steps(self, now)
        return lapsed

    def purge_expired(self) -> int:
        """Delete COMPLETED tasks past retention and expired unique locks; return tasks deleted."""
        with self.write() as now:
            self.conn.execute(Q["purge_unique_locks"], (now,))
            oldest_kept = utc_day(now - DAILY_TOTALS_KEPT_DAYS * 86400)
            self.conn.execute(Q["purge_daily_counts"], (oldest_kept,))
            throughput.purge(self.conn, now)
            return self.conn.execute(Q["purge_completed"], (now,)).rowcount
