"""SqliteBroker: the embedded default broker, one SQLite file shared by every local process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, unquote

from conveyor.brokers.combiner import Combiner, PerLoop
from conveyor.brokers.protocol import MAX_CRASH_ATTEMPTS, Broker, BrokerInfo, Capabilities
from conveyor.brokers.schedules import ScheduleStore
from conveyor.brokers.sqlite import inspection, workflow_steps
from conveyor.brokers.sqlite import throughput as minute_totals
from conveyor.brokers.sqlite.atomic import SqliteAtomicCompletion
from conveyor.brokers.sqlite.checkpoint import Checkpointer
from conveyor.brokers.sqlite.connection import (
    SYNCHRONOUS_PRAGMA,
    Synchronous,
    broker_error,
    open_connection,
)
from conveyor.brokers.sqlite.history import SqliteHistory
from conveyor.brokers.sqlite.limits import SqliteLimits
from conveyor.brokers.sqlite.locking import LockBusy
from conveyor.brokers.sqlite.progress import SqliteProgress
from conveyor.brokers.sqlite.results import SqliteResults
from conveyor.brokers.sqlite.schedules import SqliteSchedules
from conveyor.brokers.sqlite.store import Store
from conveyor.brokers.sqlite.wake import WakeListener, WakeSender, wake_directory
from conveyor.brokers.sqlite.worker_thread import DatabaseThread
from conveyor.brokers.sqlite.workers import SqliteWorkersMixin
from conveyor.brokers.sqlite.workflow_reads import claim_with_inputs
from conveyor.brokers.sqlite.workflows import SqliteWorkflows
from conveyor.brokers.throughput import MinuteTotals, Throughput
from conveyor.brokers.workers import WorkerRegistry
from conveyor.config import quote_url_part, redact_url, split_broker_url
from conveyor.errors import (
    BrokerUnavailableError,
    ConfigError,
    DuplicateTaskError,
    TaskIdConflictError,
)
from conveyor.message import Completion, Lease, QueueStats, TaskInfo, TaskMessage, TaskState

__all__ = ["SqliteBroker", "Synchronous"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_S = 5.0
# How often an idle waiter re-checks the database on its own: the bound on wake-up latency when a
# datagram is lost, and on noticing a scheduled task another process enqueued. 50 ms is 20 cheap
# indexed reads a second per idle broker.
POLL_S = 0.05

_DURABILITY = {
    Synchronous.FULL: (
        "SQLite WAL, synchronous=FULL: every commit is fsynced, so an acknowledged enqueue "
        "survives a process crash, an OS crash and power loss"
    ),
    Synchronous.NORMAL: (
        "SQLite WAL, synchronous=NORMAL: an acknowledged enqueue survives a process crash, but "
        "the last commits before an OS crash or power loss may be rolled back "
        "(use ?synchronous=full for power-loss durability)"
    ),
}


_MAX_BUSY_TIMEOUT_MS = 2**31 - 1


def _parse_options(query: str, url: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"malformed query in sqlite broker URL {redact_url(url)!r}") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        shown = quote_url_part(key, url)
        if key in options:
            raise ConfigError(f"sqlite broker URL {redact_url(url)!r} repeats option {shown}")
        if key not in ("synchronous", "busy_timeout_ms"):
            raise ConfigError(
                f"unknown option {shown} in sqlite broker URL {redact_url(url)!r}: "
                "known options are synchronous=full|normal and busy_timeout_ms=<int>"
            )
        options[key] = value
    return options


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SqliteBroker(
    SqliteWorkflows,
    SqliteProgress,
    SqliteHistory,
    SqliteSchedules,
    SqliteWorkersMixin,
    SqliteLimits,
    SqliteResults,
    SqliteAtomicCompletion,
):
    """A broker in one SQLite file: durable, shared by every process on this machine.

    Workers and producers in several processes can use the same file at once: the database is
    in WAL mode (readers never block the writer), writers wait up to ``busy_timeout_s`` for the
    lock, and every claim is one ``BEGIN IMMEDIATE`` transaction, so a task is never claimed
    twice. Each broker runs its SQLite work on one dedicated thread, so the event loop never
    waits for a lock or for the disk. One short transaction is the exception: a chain's
    continued step is settled in the event loop's thread when the database thread is idle and
    the write lock free (with ``synchronous=normal``, whose commits do not fsync). Synchronous
    callers (:meth:`enqueue_blocking`, the sync facades) run their calls in their own thread,
    under the same lock. WAL checkpoints run on a background
    thread (see :mod:`conveyor.brokers.sqlite.checkpoint`). An idle waiter is woken within
    milliseconds across processes by a datagram on a Unix socket in ``<db>.wake/``, with a 50 ms
    poll as fallback.

    Durability is chosen with ``synchronous``:

    * ``normal`` (the default): commits are not fsynced, only WAL checkpoints are. An
      acknowledged enqueue survives a crash of any process; an OS crash or power loss may roll
      back the last commits. No fsync per commit: ~1.6x the single-enqueue rate of ``full``
      here (one fsync costs ~0.25 ms on this kind of disk).
    * ``full``: every commit is fsynced before the call returns: acknowledged enqueues also
      survive an OS crash and power loss, at one fsync per transaction.

    Example::

        broker = SqliteBroker.from_url("sqlite:///conveyor.db?synchronous=full")
        await broker.enqueue([TaskMessage(id=str(new_task_id()), type="ping")])
        leases = await broker.claim(["default"], limit=32, lease_s=30)

    Args:
        path: the database file; created, with its schema, on first use.
        synchronous: ``normal`` or ``full`` (see above).
        busy_timeout_s: how long a writer waits for another process's transaction before
            failing with :class:`~conveyor.errors.BrokerUnavailableError`.
        clock: the broker clock (seconds since the epoch), read once per transaction.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        synchronous: Synchronous | str = Synchronous.NORMAL,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            self.synchronous = Synchronous(str(synchronous).lower())
        except ValueError:
            raise ConfigError(
                f"synchronous must be 'full' or 'normal', got {synchronous!r}"
            ) from None
        if not busy_timeout_s > 0:
            raise ConfigError(f"busy_timeout_s must be positive, got {busy_timeout_s!r}")
        # Absolute once, here: the process may chdir later, and the wake directory must match.
        self.path = Path(path).absolute()
        self.busy_timeout_s = busy_timeout_s
        self.clock = clock
        self._thread = DatabaseThread(f"conveyor-sqlite-{self.path.name}")
        self._checkpointer = Checkpointer(
            self.path,
            synchronous=SYNCHRONOUS_PRAGMA[self.synchronous],
            name=f"conveyor-sqlite-checkpoint-{self.path.name}",
        )
        self._store: Store | None = None
        self._journal_mode = ""
        self._closed = False
        self._wake_dir = wake_directory(self.path)
        self._sender = WakeSender(self._wake_dir, self._own_socket)
        self._listener: WakeListener | None = None
        self._listener_failed = False
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._lock = threading.Lock()  # guards _waiters and _listener
        self._enqueues: PerLoop[Combiner[Sequence[TaskMessage], list[TaskInfo]]] = PerLoop(
            lambda: Combiner(self._enqueue_groups)
        )

    @classmethod
    def from_url(cls, url: str) -> SqliteBroker:
        """Build a broker from ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``.

        Query options: ``synchronous=full|normal`` (default ``normal``) and
        ``busy_timeout_ms=<int>`` (default 5000).

        Raises:
            ConfigError: (a ``ValueError``) for a malformed URL, a host, a missing path, or an
                unknown or invalid option.
        """
        parts = split_broker_url(url)
        form = "sqlite:///relative.db or sqlite:////abs/path.db"
        if parts.scheme != "sqlite" or parts.netloc or parts.fragment:
            raise ConfigError(f"sqlite broker URL must be {form}, got {redact_url(url)!r}")
        path = unquote(parts.path)[1:]
        if not path or path.endswith("/") or path == ":memory:":
            shown = redact_url(url)
            raise ConfigError(f"sqlite broker URL must name a file ({form}), got {shown!r}")
        options = _parse_options(parts.query, url)
        busy_ms = options.get("busy_timeout_ms", str(int(DEFAULT_BUSY_TIMEOUT_S * 1000)))
        # ASCII digits only ("²".isdigit() holds) and at most SQLite's int busy timeout.
        busy = int(busy_ms) if busy_ms.isascii() and busy_ms.isdigit() and len(busy_ms) < 11 else 0
        if not 0 < busy <= _MAX_BUSY_TIMEOUT_MS:
            shown = quote_url_part(busy_ms, url)
            raise ConfigError(
                f"busy_timeout_ms must be a positive integer up to {_MAX_BUSY_TIMEOUT_MS}, "
                f"got {shown}"
            )
        return cls(
            path,
            synchronous=options.get("synchronous", Synchronous.NORMAL),
            busy_timeout_s=busy / 1000,
        )

    def __repr__(self) -> str:
        return f"SqliteBroker({str(self.path)!r}, synchronous={self.synchronous.value!r})"

    @property
    def capabilities(self) -> Capabilities:
        """Shared by processes on this machine, and persistent."""
        return Capabilities(shared_across_processes=True, persistent=True)

    # -- the database thread -------------------------------------------------------------------

    def _open(self) -> Store:
        conn, self._journal_mode = open_connection(
            self.path, synchronous=self.synchronous, busy_timeout_s=self.busy_timeout_s
        )
        if self._journal_mode != "wal":
            logger.warning(
                "sqlite broker at %s runs in %s mode, not WAL", self.path, self._journal_mode
            )
        # Without WAL there is no WAL to checkpoint: commits write the database file directly.
        wal = self._journal_mode == "wal"
        self._store = Store(
            conn,
            clock=lambda: self.clock(),
            on_ready=self._notify_ready,
            on_commit=self._checkpointer.committed if wal else lambda: None,
            busy_timeout_s=self.busy_timeout_s,
        )
        return self._store

    def _call(self, operation: Callable[[Store], T]) -> T:
        """Run on the database thread: the one place sqlite3 errors become conveyor errors."""
        try:
            return operation(self._store or self._open())
        except sqlite3.Error as exc:
            raise broker_error(exc, self.path) from exc

    async def _run(self, operation: Callable[[Store], T]) -> T:
        with self._open_only():
            return await self._thread.run(lambda: self._call(operation))

    async def _run_at_once(
        self, at_once: Callable[[Store], T], operation: Callable[[Store], T]
    ) -> T:
        """``at_once`` in the calling thread when nothing has to be waited for: the database
        thread is idle and ``at_once`` finds the write lock free (it raises
        :class:`~.locking.LockBusy` otherwise, having done nothing); else ``operation`` on the
        database thread. A short transaction run so spares the two thread hand-offs (a
        chain's step waits on both). Only with ``synchronous=normal``, whose commits do not
        wait for the disk (but for the rare sync of the WAL's first frame after a checkpoint)."""
        if self._store is not None and self.synchronous is Synchronous.NORMAL:
            thread = self._thread
            if not self._closed and thread.acquire_idle():
                try:
                    return self._call(at_once)
                except LockBusy:
                    pass
                finally:
                    thread.lock.release()
        return await self._run(operation)  # refuses a closed broker

    def _chained(self, token: int) -> bool:
        """Whether the lease of ``token`` is a chain's step leased by its parent's settlement
        (forgets it: a lease is settled once)."""
        store = self._store
        if store is None or token not in store.chained:
            return False
        store.chained.discard(token)
        return True

    def _run_blocking(self, operation: Callable[[Store], T]) -> T:
        with self._open_only():
            return self._thread.call(lambda: self._call(operation))

    @contextlib.contextmanager
    def _open_only(self) -> Iterator[None]:
        """Refuse calls on a closed broker, also one that closes while the call waits."""
        if self._closed:
            raise self._closed_error()
        try:
            yield
        except RuntimeError as exc:  # the thread stopped under a late caller
            if self._closed:
                raise self._closed_error() from exc
            raise

    def _closed_error(self) -> BrokerUnavailableError:
        return BrokerUnavailableError(f"sqlite broker at {str(self.path)!r} is closed")

    def _notify_ready(self) -> None:
        """After a commit that made work ready: wake waiters here, then in other processes."""
        self._wake_local()
        self._sender.notify()

    # -- waking --------------------------------------------------------------------------------

    def _own_socket(self) -> str | None:
        listener = self._listener
        return None if listener is None else listener.name

    def _wake_local(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that waiter's loop has closed
                loop.call_soon_threadsafe(_set_done, future)

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._listener is not None or self._listener_failed or self._closed:
                return
            try:
                self._listener = WakeListener(self._wake_dir, self._wake_local)
            except OSError as exc:
                self._listener_failed = True
                logger.warning(
                    "no cross-process wake-ups for %s (%s); idle workers poll every %.0f ms",
                    self.path,
                    exc,
                    POLL_S * 1000,
                )

    # -- lifecycle -----------------------------------------------------------------------------

    async def describe(self) -> BrokerInfo:
        """Open the database if needed and report location, durability and warnings."""
        mode = await self._run(lambda s: self._journal_mode)
        warnings: tuple[str, ...] = ()
        if mode != "wal":
            warnings = (
                f"journal mode is {mode!r}, not 'wal' (the file system may not support WAL): "
                "readers and writers block each other",
            )
        return BrokerInfo(
            backend="sqlite",
            location=str(self.path),
            durability=_DURABILITY[self.synchronous],
            warnings=warnings,
        )

    async def close(self) -> None:
        """Close the connection and the wake socket (idempotent); waiters return at once."""
        if self._closed:
            return
        self._closed = True
        self._wake_local()
        with self._lock:
            listener, self._listener = self._listener, None
            combiner = self._enqueues.made()
        if combiner is not None:
            await combiner.aclose()  # batches already handed over still get their outcomes
        if listener is not None:
            listener.close()
        # Queued behind any call still in flight, so those finish on an open connection.
        await self._thread.run(self._close_connection)
        # Its last checkpoint may need the lock (never held by this job): see Checkpointer.
        await self._thread.run(self._checkpointer.close, exclusive=False)
        self._thread.stop()

    def _close_connection(self) -> None:
        self._sender.close()
        if self._store is not None:
            self._store.conn.close()
            self._store = None

    # -- producing and consuming ---------------------------------------------------------------

    async def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """Store tasks, all or nothing, in one transaction (see :meth:`Broker.enqueue`).

        Calls made on one event loop while another enqueue is in flight are stored together in
        the next transaction, each call still all or nothing with its own error: concurrent
        producers share a commit instead of queueing for one each.
        """
        if not messages:
            return []
        return await self._enqueues.get()(messages)

    async def _enqueue_groups(
        self, groups: Sequence[Sequence[TaskMessage]]
    ) -> list[list[TaskInfo] | Exception]:
        if len(groups) == 1:  # the lone caller: the plain enqueue, which raises its own error
            [messages] = groups
            try:
                return [await self._run(lambda s: s.enqueue(messages))]
            except (TaskIdConflictError, DuplicateTaskError) as exc:
                return [exc]
        return await self._run(lambda s: s.enqueue_groups(groups))

    def enqueue_blocking(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """:meth:`enqueue` for callers on plain threads: same transaction, outcome and errors.

        The transaction runs in the calling thread (after any call in progress on this broker),
        with no event loop and no hand-off to the database thread. Safe to call from several
        threads; the sync ``Client`` uses it.
        """
        return self._run_blocking(lambda s: s.enqueue(messages))

    async def claim(self, queues: Sequence[str], *, limit: int, lease_s: float) -> list[Lease]:
        """Claim up to ``limit`` ready tasks in one transaction (see :meth:`Broker.claim`).

        The inputs of the workflow steps claimed are read in the same call on the database
        thread (see :meth:`SqliteWorkflows.load_step`)."""
        leases, inputs = await self._run(lambda s: claim_with_inputs(s, queues, limit, lease_s))
        self._keep_inputs(inputs)
        return leases

    @contextlib.contextmanager
    def _register_waiter(self) -> Iterator[asyncio.Future[None]]:
        """A future set at the next committed change here or in another process."""
        loop = asyncio.get_running_loop()
        self._ensure_listener()
        entry = (loop, loop.create_future())
        with self._lock:
            self._waiters.add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._waiters.discard(entry)

    async def wait_for_tasks(self, queues: Sequence[str], timeout_s: float) -> None:
        """Return once a task is ready in an unpaused queue of ``queues``, or after ``timeout_s``.

        Woken by other processes' commits through the wake socket; re-checks the database every
        50 ms regardless, and sleeps no longer than until the earliest scheduled task is due.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._ensure_listener()
        while not self._closed:
            # Registered before the check, so a wake-up arriving during the check is not lost.
            entry = (loop, loop.create_future())
            with self._lock:
                self._waiters.add(entry)
            try:
                ready, earliest = await self._run(lambda s: s.probe(queues))
                remaining = deadline - loop.time()
                if ready or remaining <= 0:
                    return
                pause = min(remaining, POLL_S)
                if earliest is not None:
                    pause = min(pause, max(earliest - self.clock(), 0.0))
                await asyncio.wait([entry[1]], timeout=pause)
            finally:
                with self._lock:
                    self._waiters.discard(entry)

    async def extend_leases(self, leases: Sequence[Lease], lease_s: float) -> list[bool]:
        """Push each held lease to ``now + lease_s``; ``False`` for each lost one."""
        return await self._run(lambda s: s.extend_leases(leases, lease_s))

    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        """Record successes and their successors in one transaction; ``False`` for lost leases."""
        return await self._run(lambda s: s.complete(completions))

    async def retry(self, lease: Lease, *, error: str, delay_s: float) -> None:
        """Record a failed attempt; the task waits in RETRY for ``delay_s`` seconds."""
        await self._run(lambda s: s.retry(lease, error, delay_s))

    async def archive(self, lease: Lease, *, error: str) -> None:
        """Record a failed attempt and move the task to ARCHIVED."""
        await self._run(lambda s: s.archive(lease, error))

    async def release(self, lease: Lease) -> None:
        """Give the task back, PENDING at the front of its queue, no failure counted."""
        await self._run(lambda s: s.release(lease))

    async def recover_expired(
        self, *, delay_s: float, max_crashes: int = MAX_CRASH_ATTEMPTS
    ) -> int:
        """Fail every ACTIVE task whose lease lapsed; return how many."""
        return await self._run(lambda s: s.recover_expired(delay_s, max_crashes))

    async def purge_expired(self) -> int:
        """Delete COMPLETED tasks past retention and expired unique locks; return tasks deleted."""
        return await self._run(lambda s: s.purge_expired())

    # -- inspecting ----------------------------------------------------------------------------

    async def list_queues(self) -> list[str]:
        """Every queue ever enqueued to or paused, sorted."""
        return await self._run(inspection.list_queues)

    async def queue_stats(self, queue: str) -> QueueStats:
        """Counts by state, the paused flag and today's (UTC) processed/failed totals."""
        return await self._run(lambda s: inspection.queue_stats(s, queue))

    async def list_tasks(
        self, queue: str, state: TaskState, *, offset: int = 0, limit: int = 100
    ) -> list[TaskInfo]:
        """A page of tasks in ``state``: waiting ones by ready time, others by time entered."""
        return await self._run(lambda s: inspection.list_tasks(s, queue, state, offset, limit))

    async def throughput(self, queue: str, *, minutes: int) -> list[MinuteTotals]:
        """Processed/failed totals of the last ``minutes`` minutes (see ``Throughput``)."""
        return await self._run(lambda s: minute_totals.read(s, queue, minutes))

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task; raises ``TaskNotFoundError`` when it does not exist."""
        return await self._run(lambda s: inspection.get_task(s, queue, task_id))

    async def get_tasks(self, tasks: Sequence[tuple[str, str]]) -> list[TaskInfo | None]:
        """Several tasks by ``(queue, id)`` in one read; ``None`` for one that is not there."""
        return await self._run(lambda s: workflow_steps.get_tasks(s, tasks))

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not ACTIVE, releasing its unique lock."""
        await self._run(lambda s: inspection.delete_task(s, queue, task_id))

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a SCHEDULED, RETRY or ARCHIVED task PENDING, ready now."""
        await self._run(lambda s: inspection.run_task(s, queue, task_id))

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a PENDING, SCHEDULED or RETRY task to ARCHIVED."""
        await self._run(lambda s: inspection.archive_task(s, queue, task_id))

    async def delete_tasks(self, queue: str, state: TaskState) -> int:
        """Delete every task in ``state``; 0 for ACTIVE."""
        return await self._run(lambda s: inspection.delete_tasks(s, queue, state))

    async def run_tasks(self, queue: str, state: TaskState) -> int:
        """Make every task in a SCHEDULED, RETRY or ARCHIVED ``state`` PENDING; 0 for others."""
        return await self._run(lambda s: inspection.run_tasks(s, queue, state))

    async def archive_tasks(self, queue: str, state: TaskState) -> int:
        """Archive every task in a PENDING, SCHEDULED or RETRY ``state``; 0 for others."""
        return await self._run(lambda s: inspection.archive_tasks(s, queue, state))

    async def pause_queue(self, queue: str) -> None:
        """Stop claims from ``queue``; enqueueing still works."""
        await self._run(lambda s: inspection.set_paused(s, queue, True))

    async def unpause_queue(self, queue: str) -> None:
        """Let claims from ``queue`` resume, waking idle waiters."""
        await self._run(lambda s: inspection.set_paused(s, queue, False))

    async def delete_queue(self, queue: str, *, force: bool) -> None:
        """Remove ``queue`` and everything in it, in one transaction (see the protocol)."""
        await self._run(lambda s: inspection.delete_queue(s, queue, force))


def _conforms(b: SqliteBroker) -> Broker:
    return b


def _stores_schedules(b: SqliteBroker) -> ScheduleStore:
    return b


def _registers(b: SqliteBroker) -> WorkerRegistry:
    return b


def _counts_minutes(b: SqliteBroker) -> Throughput:
    return b
