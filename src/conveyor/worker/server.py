"""Server: the worker's lifecycle. It claims tasks, runs handlers, and shuts down gracefully.

Parts, one per module: the fetcher (claims), the executor (runs attempts), the completer (records
successes in batches), the heartbeat (renews leases and refreshes the worker's record, see
registration), the cancel watch (stops attempts an operator cancelled), the recoverer (brings back
tasks of dead workers) and the janitor (purges expired results). The server starts them in that
dependency order and stops them in reverse, so leases stay renewed until every outcome is
recorded; the worker's record is written before the first claim and removed after the last step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta

from conveyor.backoff import ReconnectBackoff, RetryDelay, default_retry_delay
from conveyor.brokers import open_broker
from conveyor.brokers.limits import TaskLimits
from conveyor.brokers.protocol import MAX_CRASH_ATTEMPTS, Broker
from conveyor.config import broker_url_from_env, redact_url, split_broker_url
from conveyor.errors import BrokerUnavailableError, ConfigError
from conveyor.message import DEFAULT_MAX_PAYLOAD_BYTES
from conveyor.middleware import AsyncHandler, ErrorHandler, Handler, as_async
from conveyor.signals import Signals
from conveyor.worker import crashpoints, registration
from conveyor.worker.cancels import CancelWatch
from conveyor.worker.completer import Completer
from conveyor.worker.config import WorkerConfig, default_concurrency, normalize_queues, seconds
from conveyor.worker.executor import Executor
from conveyor.worker.fetcher import Fetcher, QueueSelector
from conveyor.worker.heartbeat import Heartbeat, LeaseRegistry
from conveyor.worker.janitor import Janitor
from conveyor.worker.limits import write_task_limits
from conveyor.worker.loops import LoopChoice, loop_factory
from conveyor.worker.pool import HandlerThreadPool
from conveyor.worker.recoverer import Recoverer
from conveyor.worker.stats import WorkerStats

__all__ = ["Server"]

logger = logging.getLogger(__name__)

READY_MESSAGE = "conveyor worker ready"
"""Logged at INFO, with the pid, when the server begins claiming (process tests wait for it)."""


GC_YOUNG_THRESHOLD = 10_000
"""The young-generation threshold :meth:`Server.run` sets (Python's default is 700)."""


def _tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a worker process (see :meth:`Server.run`).

    A worker allocates in bursts (a claim of 100 tasks makes about a thousand objects at once),
    so at the default threshold the collector runs hundreds of times a second, and every full
    collection walks each object made at import time. Measured on the Redis bench: about a tenth
    of the worker's CPU, a twentieth after this.
    """
    gc.freeze()  # what exists now (modules, the app, its clients) is never scanned again
    young, older, oldest = gc.get_threshold()
    if young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class Server:
    """A worker server: claims tasks from its queues and runs them through a handler.

    Three ways to run it: :meth:`run` blocks the calling thread and handles signals (the CLI);
    :meth:`start` / :meth:`stop` run it on a background thread; :meth:`serve` runs on the
    caller's event loop until :meth:`shutdown` (or :meth:`request_stop`).

    Example::

        mux = ServeMux()
        mux.handle("email:", send_email)
        Server("sqlite:///tasks.db", queues={"critical": 6, "default": 3}).run(mux)

    Args:
        broker: a broker URL, a :class:`~conveyor.brokers.protocol.Broker`, or ``None`` for
            ``CONVEYOR_BROKER_URL`` (default ``sqlite:///conveyor.db``). A server closes only a
            broker it opened from a URL; given a URL, it renews leases on a thread of its own.
        concurrency: tasks run at once; also the number of threads for sync handlers.
        queues: ``{name: weight}``, or a list of names (weight 1 each). Default ``{"default": 1}``.
        strict_priority: always claim from the heaviest queue first.
        retry_delay: the delay before each retry (default: exponential backoff, see
            :mod:`conveyor.backoff`).
        error_handler: called as ``error_handler(ctx, task, exc)`` on each failed attempt.
        shutdown_timeout: how long a graceful shutdown waits for running tasks before giving
            the rest back to the queue.
        sync_cancel_grace: how long an interrupted sync handler (timeout, cancel, shutdown, lost
            lease) has to notice ``ctx.cancelled`` and return before its thread is abandoned
            and replaced; ``0`` abandons it at once.
        lease: how long a claim lasts without renewal; a crashed worker's tasks return after it.
        max_payload_bytes: stored payloads larger than this are archived unread.
        renew_interval: time between lease renewals (default: a third of the lease).
        recover_interval: time between scans for expired leases.
        recover_delay: the longest a recovered task waits before running again (each waits
            between half of this and all of it).
        max_crash_attempts: a task whose lease lapses this many times (it keeps killing or
            stalling its worker) is archived instead of retried.
        janitor_interval: time between purges of expired results.
        poll_interval: longest idle wait before claiming again, should a wake-up be missed.

    Raises:
        ConfigError: an option or the broker URL is invalid.
    """

    def __init__(
        self,
        broker: str | Broker | None = None,
        *,
        concurrency: int | None = None,
        queues: Mapping[str, int] | Sequence[str] | None = None,
        strict_priority: bool = False,
        retry_delay: RetryDelay = default_retry_delay,
        error_handler: ErrorHandler | None = None,
        shutdown_timeout: float | timedelta = 8.0,
        sync_cancel_grace: float | timedelta = 1.0,
        lease: float | timedelta = 30.0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        renew_interval: float | timedelta | None = None,
        recover_interval: float | timedelta = 5.0,
        recover_delay: float | timedelta = 1.0,
        max_crash_attempts: int = MAX_CRASH_ATTEMPTS,
        janitor_interval: float | timedelta = 10.0,
        poll_interval: float | timedelta = 1.0,
    ) -> None:
        self.config = WorkerConfig(
            concurrency=default_concurrency() if concurrency is None else concurrency,
            queues=normalize_queues(queues),
            strict_priority=strict_priority,
            retry_delay=retry_delay,
            error_handler=error_handler,
            shutdown_timeout_s=seconds(shutdown_timeout, what="shutdown_timeout"),
            sync_cancel_grace_s=seconds(sync_cancel_grace, what="sync_cancel_grace"),
            lease_s=seconds(lease, what="lease"),
            max_payload_bytes=max_payload_bytes,
            renew_interval_s=(
                None if renew_interval is None else seconds(renew_interval, what="renew_interval")
            ),
            recover_interval_s=seconds(recover_interval, what="recover_interval"),
            recover_delay_s=seconds(recover_delay, what="recover_delay"),
            max_crash_attempts=max_crash_attempts,
            janitor_interval_s=seconds(janitor_interval, what="janitor_interval"),
            poll_interval_s=seconds(poll_interval, what="poll_interval"),
        )
        """The validated options (frozen)."""
        self._broker_arg = broker_url_from_env() if broker is None else broker
        if isinstance(self._broker_arg, str):
            split_broker_url(self._broker_arg)  # a bad URL fails here, not in a thread later
        crashpoints.arm_from_env()  # test-only; a bad value fails here, in the worker alone
        self._stats = WorkerStats()
        self.signals = Signals()
        """Lifecycle signals of this worker's tasks (see :mod:`conveyor.signals`)."""
        self.worker_id = registration.new_worker_id()
        """This server's id in the worker registry (``Inspector.list_workers``)."""
        self._executor: Executor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_requested = False
        self._used = False
        self._ready = threading.Event()
        self._done = threading.Event()
        self._fetcher: Fetcher | None = None
        self._finished: asyncio.Event | None = None
        self._task_limits: Mapping[str, TaskLimits] = {}
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None

    @classmethod
    def from_config(cls, broker: str | Broker | None, config: WorkerConfig) -> Server:
        """A server with every option taken from ``config``."""
        server = cls(broker)
        server.config = config
        return server

    # -- state ---------------------------------------------------------------------------------

    @property
    def stats(self) -> WorkerStats:
        """A copy of the counters: claimed, succeeded, failed, retried, archived, released, ..."""
        return dataclasses.replace(self._stats)

    @property
    def running_tasks(self) -> int:
        """How many attempts are running now (in their handler or recording an outcome)."""
        executor = self._executor
        return 0 if executor is None else executor.running

    @property
    def ready(self) -> bool:
        """Whether the server has begun claiming (and not yet finished shutting down)."""
        return self._ready.is_set() and not self._done.is_set()

    @property
    def fetching(self) -> bool:
        """Whether the server is claiming new tasks (ready, not paused by SIGTSTP, not stopping)."""
        fetcher = self._fetcher
        return self.ready and fetcher is not None and fetcher.active

    # -- running -------------------------------------------------------------------------------

    def run(self, handler: Handler, *, loop: LoopChoice = "auto") -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully and return.

        SIGTSTP stops fetching new tasks while running ones finish (before a planned shutdown).
        Call from the main thread (signal handlers can only be installed there).

        Args:
            handler: what every task goes through (a ServeMux, an App's mux, a function).
            loop: the event loop: ``"auto"`` (uvloop when installed, else asyncio),
                ``"asyncio"`` or ``"uvloop"`` (see :mod:`conveyor.worker.loops`).

        The worker owns its process here, so it also tunes the garbage collector for it:
        :func:`gc.freeze` on what exists at start, and a young-generation threshold of
        :data:`GC_YOUNG_THRESHOLD` (collections stay on; they just run less often).

        Raises:
            ConfigError: ``loop`` is unknown, uvloop is asked for and not installed, or this is
                not the main thread (use :meth:`start` or ``await`` :meth:`serve` there).
        """
        if threading.current_thread() is not threading.main_thread():
            raise ConfigError(
                "Server.run installs signal handlers, so call it from the main thread; "
                "elsewhere use Server.start(handler) or await Server.serve(handler)"
            )
        name, factory = loop_factory(loop)
        logger.info("event loop: %s", name)
        _tune_gc()
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(self._serve_with_signals(handler))

    def start(self, handler: Handler) -> None:
        """Run the server on a background thread; return once it has begun claiming.

        While the broker is unreachable the server keeps retrying, and this call keeps waiting.

        Raises:
            Exception: whatever stopped the server from starting (a bad URL, for example).
        """
        self._claim_use()
        self._thread = threading.Thread(
            target=self._thread_main, args=(handler,), name="conveyor-server", daemon=True
        )
        self._thread.start()
        while not self._ready.wait(0.05):
            if not self._thread.is_alive():
                self._thread.join()
                if self._thread_error is not None:
                    raise self._thread_error
                raise RuntimeError("conveyor server stopped before it became ready")

    def stop(self) -> None:
        """Shut a :meth:`start`-ed server down gracefully and wait for it.

        Raises:
            Exception: whatever made the server fail while running.
        """
        self.request_stop()
        if self._thread is not None:
            self._thread.join()
            if self._thread_error is not None:
                raise self._thread_error

    async def serve(self, handler: Handler) -> None:
        """Run on the current event loop until :meth:`shutdown` or :meth:`request_stop`.

        A server serves once; create a new one to serve again.

        Raises:
            RuntimeError: the server was already used.
        """
        if self._thread is None or threading.current_thread() is not self._thread:
            self._claim_use()
        call = as_async(handler)
        # The limits an app declares (@app.task(rate_limit=...)) come with its mux.
        self._task_limits = getattr(handler, "task_limits", {})
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._finished = asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        broker, owned = self._open_broker()
        try:
            await self._serve(broker, call)
        finally:
            if owned:
                await broker.close()
            self._finished.set()
            self._done.set()

    async def shutdown(self) -> None:
        """Stop a server running via :meth:`serve` on this loop and wait until it has stopped."""
        self.request_stop()
        if self._finished is not None:
            await self._finished.wait()

    def request_stop(self) -> None:
        """Ask for a graceful shutdown; safe from any thread and from signal handlers."""
        self._stop_requested = True
        loop, event = self._loop, self._stop_event
        if loop is None or event is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop already closed: the server has stopped
                loop.call_soon_threadsafe(event.set)

    def stop_fetching(self) -> None:
        """Stop claiming new tasks; running ones finish. Safe from any thread (SIGTSTP)."""
        loop, fetcher = self._loop, self._fetcher
        if loop is None or fetcher is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fetcher.pause)

    # -- internals -----------------------------------------------------------------------------

    def _claim_use(self) -> None:
        if self._used:
            raise RuntimeError("a Server runs once; create a new Server to run again")
        self._used = True

    def _thread_main(self, handler: Handler) -> None:
        try:
            asyncio.run(self.serve(handler))
        except BaseException as exc:  # handed to start()/stop() in the caller's thread
            self._thread_error = exc

    async def _serve_with_signals(self, handler: Handler) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig, callback in (
            (signal.SIGTERM, self._on_stop_signal),
            (signal.SIGINT, self._on_stop_signal),
            (signal.SIGTSTP, self.stop_fetching),
        ):
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
        try:
            await self.serve(handler)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_stop_signal(self) -> None:
        if self._stop_requested:
            logger.info("already shutting down; waiting for running tasks")
            return
        logger.info("shutdown requested; finishing running tasks")
        self.request_stop()

    def _open_broker(self) -> tuple[Broker, bool]:
        if isinstance(self._broker_arg, str):
            return open_broker(self._broker_arg), True
        return self._broker_arg, False

    async def _describe(self, broker: Broker) -> bool:
        """Log what the broker is; wait (with backoff) while it is unreachable. False: stopped."""
        assert self._stop_event is not None
        backoff = ReconnectBackoff()
        while not self._stop_event.is_set():
            try:
                info = await broker.describe()
            except BrokerUnavailableError as exc:
                delay = backoff.next_delay()
                logger.warning("broker unavailable at start (%s); retrying in %.2fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
                continue
            logger.info(
                "broker: %s at %s; durability: %s", info.backend, info.location, info.durability
            )
            for warning in info.warnings:
                logger.warning("broker: %s", warning)
            return True
        return False

    async def _serve(self, broker: Broker, call: AsyncHandler) -> None:
        assert self._stop_event is not None
        if not await self._describe(broker):
            return
        await write_task_limits(broker, self._task_limits)
        config, stats = self.config, self._stats
        registry = LeaseRegistry()
        pool = HandlerThreadPool(config.concurrency)
        completer = Completer(
            broker,
            registry=registry,
            stats=stats,
            batch_size=config.completion_batch_size,
            linger_s=config.completion_linger_s,
            give_up_s=config.lease_s,
            on_completed=lambda completion, ok: executor.completed(completion, ok),
        )
        executor = Executor(
            broker,
            call,
            config=config,
            registry=registry,
            completer=completer,
            pool=pool,
            stats=stats,
            on_slot_freed=lambda: fetcher.wake(),
            signals=self.signals,
            can_continue=lambda: fetcher.active,
        )
        self._executor = executor
        fetcher = Fetcher(
            broker,
            executor,
            QueueSelector(config.queues, strict=config.strict_priority),
            lease_s=config.lease_s,
            poll_interval_s=config.poll_interval_s,
            stats=stats,
            on_ready=self._announce_ready,
        )
        heartbeat = Heartbeat(
            broker=broker,
            url=self._broker_arg if isinstance(self._broker_arg, str) else None,
            registry=registry,
            lease_s=config.lease_s,
            interval_s=(beat_s := registration.beat_interval(config.renew_every_s)),
            on_lost=executor.lease_lost,
            on_error=self._count_broker_error,
            worker=(record := registration.worker_record(self.worker_id, config)),
            worker_ttl_s=registration.record_ttl(beat_s),
        )
        cancels = CancelWatch(
            broker,
            registry=registry,
            on_cancel=executor.cancel,
            on_error=self._count_broker_error,
        )
        recoverer = Recoverer(
            broker,
            interval_s=config.recover_interval_s,
            delay_s=config.recover_delay_s,
            max_crashes=config.max_crash_attempts,
            on_recovered=self._count_recovered,
            on_error=self._count_broker_error,
        )
        janitor = Janitor(
            broker,
            interval_s=config.janitor_interval_s,
            on_purged=self._count_purged,
            on_error=self._count_broker_error,
        )
        await heartbeat.start()  # first: the one start that can fail (its thread opens a broker)
        if not await registration.register(broker, record, registration.record_ttl(beat_s)):
            self._stats.broker_errors += 1
        completer.start()
        cancels.start()
        recoverer.start()
        janitor.start()
        self._fetcher = fetcher
        fetcher.start()
        try:
            await self._stop_event.wait()
        finally:
            await self._shut_down(fetcher, executor, completer, heartbeat, recoverer, janitor)
            await cancels.stop()
            if not await registration.unregister(broker, self.worker_id):
                self._stats.broker_errors += 1
            pool.shutdown()

    async def _shut_down(
        self,
        fetcher: Fetcher,
        executor: Executor,
        completer: Completer,
        heartbeat: Heartbeat,
        recoverer: Recoverer,
        janitor: Janitor,
    ) -> None:
        config = self.config
        await fetcher.stop(timeout_s=max(config.shutdown_timeout_s, 1.0))
        if executor.running:
            logger.info(
                "waiting up to %gs for %d running tasks",
                config.shutdown_timeout_s,
                executor.running,
            )
        if not await executor.wait_idle(config.shutdown_timeout_s):
            count = executor.interrupt_all()
            logger.warning("shutdown timeout: giving %d unfinished tasks back to the queue", count)
            # Interrupted sync handlers get their whole cancel grace to return their task.
            grace_s = max(config.release_grace_s, config.sync_cancel_grace_s)
            if not await executor.wait_idle(grace_s):
                await executor.cancel_remaining()
        executor.close()
        await completer.stop(timeout_s=max(config.shutdown_timeout_s, 1.0))
        await recoverer.stop()
        await janitor.stop()
        await heartbeat.stop()
        logger.info("conveyor worker stopped (pid %d)", os.getpid())

    def _announce_ready(self) -> None:
        if crashpoints.armed():
            logger.warning(
                "TEST CRASH POINTS ARMED (%s=%s): this worker will kill itself at random",
                crashpoints.ENV_VAR,
                ",".join(f"{k}:{v:g}" for k, v in sorted(crashpoints.armed().items())),
            )
        names = ", ".join(f"{name}={weight}" for name, weight in self.config.queues)
        where = (
            redact_url(self._broker_arg)
            if isinstance(self._broker_arg, str)
            else type(self._broker_arg).__name__
        )
        logger.info(
            "%s (pid %d, concurrency %d, queues %s%s, broker %s)",
            READY_MESSAGE,
            os.getpid(),
            self.config.concurrency,
            names,
            " strict" if self.config.strict_priority else "",
            where,
        )
        self._ready.set()

    def _count_broker_error(self) -> None:
        self._stats.broker_errors += 1

    def _count_recovered(self, count: int) -> None:
        self._stats.recovered += count

    def _count_purged(self, count: int) -> None:
        self._stats.purged += count
