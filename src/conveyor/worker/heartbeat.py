"""Lease renewal: the leases a worker holds, and the loop that keeps them from lapsing.

Renewal prefers a thread of its own, with its own event loop and its own broker connection opened
from the server's URL: an async handler that blocks the main loop (``time.sleep`` in an
``async def``) then cannot stop the renewals, so its task is not recovered and run twice while it
is still running (Dramatiq #692, APScheduler #1121). A server given a ``Broker`` object instead of
a URL cannot open a second connection, so it renews on the main loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable

from conveyor.brokers import open_broker
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workers import WorkerInfo, WorkerRegistry
from conveyor.errors import ConveyorError
from conveyor.message import Lease
from conveyor.worker.crashpoints import crashpoint
from conveyor.worker.periodic import PeriodicLoop

logger = logging.getLogger(__name__)

# Leases per extend_leases call: large enough to renew thousands in a few round trips, small
# enough that one call never holds a SQLite write lock or a Redis script for long.
_RENEW_BATCH = 500

_Key = tuple[str, str, int]


class LeaseRegistry:
    """The leases this worker holds: claimed, and their outcome not yet recorded.

    Thread-safe: the executor adds and removes leases on the main loop while the renewal thread
    takes snapshots.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[_Key, Lease] = {}

    @staticmethod
    def key(lease: Lease) -> _Key:
        """The identity of one attempt: queue, task id and fencing token."""
        return (lease.task.queue, lease.task.id, lease.token)

    def add(self, lease: Lease) -> None:
        """Start renewing ``lease``."""
        with self._lock:
            self._leases[self.key(lease)] = lease

    def discard(self, lease: Lease) -> None:
        """Stop renewing ``lease`` (its outcome is recorded, or it is lost)."""
        with self._lock:
            self._leases.pop(self.key(lease), None)

    def snapshot(self) -> list[Lease]:
        """The leases held right now."""
        with self._lock:
            return list(self._leases.values())

    def __contains__(self, lease: object) -> bool:
        return isinstance(lease, Lease) and self.key(lease) in self._leases

    def __len__(self) -> int:
        return len(self._leases)


class Heartbeat:
    """Extends every held lease each ``interval_s`` seconds; reports lost ones.

    Args:
        broker: the server's broker, used when renewal runs on the main loop.
        url: when given, renewal runs on its own thread with a broker opened from this URL.
        registry: the leases to renew.
        lease_s: the new lease length set by each renewal.
        interval_s: time between renewals.
        on_lost: called on the main loop with the leases the broker refused to extend.
        on_error: called on the main loop after a failed renewal.
        worker: this worker's record, refreshed (with the ids of the tasks it runs) at every
            renewal, so a worker is listed exactly while its heartbeat runs.
        worker_ttl_s: how long a refreshed record lasts without the next refresh.
    """

    def __init__(
        self,
        *,
        broker: Broker,
        url: str | None,
        registry: LeaseRegistry,
        lease_s: float,
        interval_s: float,
        on_lost: Callable[[list[Lease]], None],
        on_error: Callable[[], None],
        worker: WorkerInfo | None = None,
        worker_ttl_s: float = 30.0,
    ) -> None:
        self._broker = broker
        self._worker = worker
        self._worker_ttl_s = worker_ttl_s
        self._url = url
        self._registry = registry
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._on_lost = on_lost
        self._on_error = on_error
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._local: PeriodicLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    @property
    def threaded(self) -> bool:
        """Whether renewal runs on its own thread (the server was given a URL)."""
        return self._url is not None

    async def start(self) -> None:
        """Start renewing; returns once the renewal loop runs.

        Raises:
            ConfigError: the renewal thread could not open its broker from the URL.
        """
        self._main_loop = asyncio.get_running_loop()
        if self._url is None:
            self._local = PeriodicLoop(
                "lease renewal", self._interval_s, self._renew_local, on_error=self._on_error
            )
            self._local.start()
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main,
            args=(self._url, ready),
            name="conveyor-heartbeat",
            daemon=True,
        )
        self._thread.start()
        await asyncio.wrap_future(ready)

    async def stop(self) -> None:
        """Stop renewing and wait for the loop (and its thread and broker) to finish."""
        if self._local is not None:
            await self._local.stop()
        thread, loop, stop = self._thread, self._thread_loop, self._thread_stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the thread's loop already ended
                loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join)

    async def _renew_local(self) -> None:
        lost = await self._renew(self._broker)
        if lost:
            self._on_lost(lost)

    async def _renew(self, broker: Broker) -> list[Lease]:
        leases = self._registry.snapshot()
        lost: list[Lease] = []
        for start in range(0, len(leases), _RENEW_BATCH):
            chunk = leases[start : start + _RENEW_BATCH]
            crashpoint("before_renew")
            held = await broker.extend_leases(chunk, self._lease_s)
            lost.extend(lease for lease, ok in zip(chunk, held, strict=True) if not ok)
        if leases:
            logger.debug("renewed %d leases (%d lost)", len(leases) - len(lost), len(lost))
        if self._worker is not None and isinstance(broker, WorkerRegistry):
            active = tuple(dict.fromkeys(lease.task.id for lease in leases))
            record = dataclasses.replace(self._worker, active=active)
            try:
                await broker.register_worker(record, ttl_s=self._worker_ttl_s)
            except ConveyorError as exc:
                # The lost leases above must still reach the executor; the record is refreshed
                # again at the next beat (it lasts three of them).
                logger.warning("could not refresh this worker's record: %s", exc)
        return lost

    # -- the renewal thread --------------------------------------------------------------------

    def _thread_main(self, url: str, ready: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._thread_serve(url, ready))
        except BaseException as exc:  # reported to start(); nothing else may see it
            if not ready.done():
                ready.set_exception(exc)
            else:
                logger.exception("lease renewal thread failed")

    async def _thread_serve(self, url: str, ready: concurrent.futures.Future[None]) -> None:
        broker = open_broker(url)
        try:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            periodic = PeriodicLoop(
                "lease renewal",
                self._interval_s,
                lambda: self._renew_threaded(broker),
                on_error=lambda: self._to_main(self._on_error),
            )
            periodic.start()
            ready.set_result(None)
            await self._thread_stop.wait()
            await periodic.stop()
        finally:
            await broker.close()

    async def _renew_threaded(self, broker: Broker) -> None:
        lost = await self._renew(broker)
        if lost:
            self._to_main(self._on_lost, lost)

    def _to_main(self, func: Callable[..., None], *args: object) -> None:
        assert self._main_loop is not None
        with contextlib.suppress(RuntimeError):  # the main loop has closed: nobody is left to tell
            self._main_loop.call_soon_threadsafe(func, *args)
