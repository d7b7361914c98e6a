"""The scheduler loop: enqueue each fire time of each schedule entry, exactly once.

Any number of schedulers may run against one broker (every ``conveyor worker`` of an app with
schedules runs one, ``conveyor scheduler`` runs one alone). Each round asks the broker for the
due entries and its clock, plans every due entry's fire (:mod:`conveyor.scheduling.plan`) and
hands the plans to the broker, which applies each only if that entry's cursor has not moved:
the first scheduler to get there enqueues the tasks, the others' plans come back stale. Then the
loop sleeps until the next cursor (at most :data:`MAX_IDLE_S`, so entries added by the
inspector are seen soon).

At start a scheduler writes its app's code-defined entries (an unchanged entry keeps its
cursor, so restarting never fires twice) and removes the entries its app's group defined in
code before but defines no more. Broker outages are logged and retried, as the worker's loops
are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from conveyor.backoff import ReconnectBackoff
from conveyor.broker_handle import resolve_broker
from conveyor.brokers.protocol import Broker
from conveyor.brokers.schedules import ScheduleFire, ScheduleRecord, ScheduleStore
from conveyor.errors import BrokerUnavailableError, ConfigError
from conveyor.message import DEFAULT_MAX_PAYLOAD_BYTES
from conveyor.scheduling.entry import ScheduleEntry, spec_of
from conveyor.scheduling.plan import plan_fire
from conveyor.scheduling.spec import FireSpec

__all__ = ["MAX_IDLE_S", "Scheduler", "schedule_store"]

logger = logging.getLogger(__name__)

MAX_IDLE_S = 1.0
"""The longest a scheduler sleeps between rounds (an entry added elsewhere fires within it)."""
BATCH = 500
"""Due entries planned and fired per round (a round with a full batch runs again at once)."""
_SPEC_CACHE_SIZE = 50_000
_NEXT_MEMO_SIZE = 64  # next fire times remembered per definition
_BACKOFF_CAP_S = 1.0  # under LATE_GRACE_S: a broker back within seconds fires late, not missed


def schedule_store(broker: Broker) -> ScheduleStore:
    """The broker's schedule store.

    Raises:
        ConfigError: the broker does not store schedules.
    """
    if not isinstance(broker, ScheduleStore):
        raise ConfigError(f"{type(broker).__name__} does not store schedules")
    return broker


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class Scheduler:
    """Fires every schedule entry stored in a broker; writes an app's own entries first.

    Run it with :meth:`serve` on an event loop, or :meth:`start` / :meth:`stop` on a thread of
    its own (the worker does: a handler blocking the worker's loop cannot delay a fire).

    Example::

        scheduler = Scheduler("redis://localhost:6379/0", entries=app.schedules.values())
        await scheduler.serve()     # until request_stop()

    Args:
        broker: a broker URL (opened and closed by the scheduler) or a Broker instance.
        entries: the code-defined entries to write at start.
        owner: the app group those entries belong to; at start, entries of this group that
            ``entries`` lacks are removed. ``None``: write nothing, remove nothing.
        max_payload_bytes: the payload cap applied to the entries written.
    """

    def __init__(
        self,
        broker: str | Broker,
        *,
        entries: Sequence[ScheduleEntry] = (),
        owner: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self._broker_arg = broker
        self._entries = list(entries)
        self._owner = owner
        self._max_payload_bytes = max_payload_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._bad: set[str] = set()  # revisions already reported as unusable
        # Parsed specs by definition: parsing a cron expression costs far more than using it.
        self._specs: dict[tuple[str | None, int | None, str], _Memo] = {}
        self.fired = 0
        """Tasks enqueued by this scheduler (for tests and logs)."""

    # -- running -------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Write the app's entries, then fire due entries until :meth:`request_stop`."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        broker, owned, label = resolve_broker(self._broker_arg)
        try:
            store = schedule_store(broker)
            if await self._retrying(lambda: self._sync(store)):
                logger.info("scheduler started (broker %s)", label)
                self._ready.set()
                await self._rounds(store)
        finally:
            self._ready.set()
            if owned:
                await broker.close()
            logger.info("scheduler stopped")

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return; safe from any thread and from signal handlers."""
        self._stop_requested = True
        loop, event = self._loop, self._stopping
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: already stopped
            loop.call_soon_threadsafe(event.set)

    def start(self) -> None:
        """Run :meth:`serve` on a thread of its own (see :meth:`wait_started`)."""
        self._thread = threading.Thread(
            target=self._thread_main, name="conveyor-scheduler", daemon=True
        )
        self._thread.start()

    def wait_started(self, timeout_s: float | None = None) -> bool:
        """Wait until the app's entries are written and the first round starts (or the
        scheduler stopped); ``False`` on timeout."""
        return self._ready.wait(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop a :meth:`start`-ed scheduler and wait for its thread."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:
            self._error = exc
            logger.exception("scheduler failed")
            self._ready.set()

    # -- the loop ------------------------------------------------------------------------------

    async def _retrying(self, step: Callable[[], Awaitable[None]]) -> bool:
        """Run ``step()`` until it succeeds; ``False`` if asked to stop first."""
        assert self._stopping is not None
        backoff = ReconnectBackoff(cap_s=_BACKOFF_CAP_S)
        while not self._stopping.is_set():
            try:
                await step()
            except BrokerUnavailableError as exc:
                delay = backoff.next_delay()
                logger.warning("scheduler: broker unavailable (%s); retrying in %.2fs", exc, delay)
            except Exception:
                delay = backoff.next_delay()
                logger.exception("scheduler round failed; retrying in %.2fs", delay)
            else:
                return True
            await self._sleep(delay)
        return False

    async def _rounds(self, store: ScheduleStore) -> None:
        assert self._stopping is not None
        pause = 0.0

        async def round_() -> None:
            nonlocal pause
            pause = await self.run_once(store)

        while not self._stopping.is_set():
            if not await self._retrying(round_):
                return
            await self._sleep(pause)

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _sync(self, store: ScheduleStore) -> None:
        """Write the app's entries; remove its group's entries the code no longer defines."""
        if self._owner is None:
            return
        now = await store.schedule_clock()
        names = set()
        for entry in self._entries:
            names.add(entry.name)
            record = entry.record(
                owner=self._owner,
                next_fire_at=entry.spec.next_after(now),
                max_payload_bytes=self._max_payload_bytes,
            )
            try:
                await store.put_schedule(record)
            except ConfigError as exc:
                # An entry the broker refuses must not keep the app's other entries from
                # firing: reported, left out.
                logger.error("schedule %s cannot be stored: %s", entry.name, exc)
        for stored in await store.list_schedules():
            stale = stored.owner == self._owner and stored.name not in names
            if stale and await store.remove_schedule(stored.name, revision=stored.revision):
                logger.info("schedule %s removed: its app no longer defines it", stored.name)

    async def run_once(self, store: ScheduleStore) -> float:
        """One round: fire every due entry; return how long to sleep before the next."""
        asked = time.monotonic()
        due = await store.due_schedules(limit=BATCH)
        plans: list[tuple[ScheduleFire, list[float]]] = []
        for record in due.due:
            try:
                plans.append(plan_fire(record, self._spec(record), due.now))
            except Exception as exc:
                # One unusable entry (a damaged record, a cron with no next date) must not
                # hold up the others: it is reported once per revision and left as it is.
                if record.revision not in self._bad:
                    self._bad.add(record.revision)
                    logger.error("schedule %s cannot fire: %s", record.name, exc)
        if plans:
            outcomes = await store.fire_schedules([fire for fire, _ in plans])
            for (fire, times), outcome in zip(plans, outcomes, strict=True):
                if outcome.applied:
                    self._log_fire(fire, times, outcome.stored)
        if len(due.due) >= BATCH:
            return 0.0
        if due.next_at is None:
            return MAX_IDLE_S
        # The broker's now was read at about `asked`: the round's own time is already spent.
        wait = due.next_at - due.now - (time.monotonic() - asked)
        return min(max(wait, 0.001), MAX_IDLE_S)

    def _spec(self, record: ScheduleRecord) -> _Memo:
        key = (record.cron, record.every_us, record.tz)
        found = self._specs.get(key)
        if found is None:
            if len(self._specs) >= _SPEC_CACHE_SIZE:
                self._specs.clear()
            found = self._specs[key] = _Memo(spec_of(record))
        return found

    def _log_fire(self, fire: ScheduleFire, times: list[float], stored: Sequence[str]) -> None:
        kept = set(stored)
        self.fired += len(kept)
        what = "workflow" if fire.workflows else "task"
        for at, fired in zip(times, fire.ids, strict=True):
            extra = {"schedule": fire.name, "task_id": fired, "queue": fire.queue}
            if fired in kept:
                logger.info(
                    "schedule %s fired for %s: %s %s",
                    fire.name,
                    _iso(at),
                    what,
                    fired,
                    extra=extra,
                )
            else:
                logger.info(
                    "schedule %s: fire time %s skipped, %s %s or its unique key already exists",
                    fire.name,
                    _iso(at),
                    what,
                    fired,
                    extra=extra,
                )
        if not times:
            logger.info("schedule %s: missed fire times skipped", fire.name)


class _Memo:
    """A spec with its latest next fire times remembered: the entries sharing a definition
    (a cron expression, a zone) and due together share a cursor, so a round computes their
    next fire time (croniter, about 0.2 ms) once rather than once per entry."""

    __slots__ = ("_next", "_spec")

    def __init__(self, spec: FireSpec) -> None:
        self._spec = spec
        self._next: dict[float, float] = {}

    def next_after(self, ts: float) -> float:
        found = self._next.get(ts)
        if found is None:
            if len(self._next) >= _NEXT_MEMO_SIZE:
                self._next.clear()
            found = self._next[ts] = self._spec.next_after(ts)
        return found

    def last_at_or_before(self, ts: float) -> float | None:
        return self._spec.last_at_or_before(ts)
