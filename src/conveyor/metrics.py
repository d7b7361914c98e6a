"""Prometheus metrics, on an explicit registry (never prometheus-client's global one).

Three sources, each optional:

* a worker's lifecycle signals (:meth:`Metrics.observe`): counters of attempts by ``queue`` and
  ``task_type`` and the handler-duration histogram;
* a worker server (:meth:`Metrics.watch_server`): tasks running now, lease recoveries and broker
  errors, read from the server's counters at each scrape;
* the broker, through an :class:`~conveyor.Inspector` (:meth:`Metrics.watch_queues`): queue sizes
  by state, the oldest pending task's age, paused queues and live workers, queried at each scrape
  (a few round trips per queue).

``conveyor worker --metrics-port 9090`` wires all three and serves ``/metrics``. In your own
process::

    metrics = Metrics()
    metrics.observe(server.signals)
    metrics.watch_server(server)
    metrics.serve(9090)

Every name and its meaning is listed in docs/metrics.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.errors import ConveyorError
from conveyor.message import QueueStats, TaskState
from conveyor.signals import Signals, TaskEvent

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from conveyor.inspector import AsyncInspector, Inspector
    from conveyor.worker.server import Server

__all__ = [
    "DURATION_BUCKETS",
    "Metrics",
    "MetricsServer",
    "QueueReading",
    "queue_exposition",
    "queue_families",
]

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
"""Histogram buckets of ``conveyor_task_duration_seconds``: from 5 ms jobs to hour-long ones."""

_LABELS = ("queue", "task_type")


class MetricsServer:
    """The HTTP server :meth:`Metrics.serve` started; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server

    @property
    def port(self) -> int:
        """The port it listens on (useful when asked for port 0)."""
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()


class Metrics:
    """conveyor's Prometheus collectors, registered on ``registry``.

    Args:
        registry: where to register (default: a new :class:`~prometheus_client.CollectorRegistry`
            of its own, so two workers in one process never share counters).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        """The registry every collector of this object is on (serve or scrape it)."""
        r = self.registry
        self.processed = Counter(
            "conveyor_tasks_processed_total",
            "Finished attempts (succeeded or failed).",
            _LABELS,
            registry=r,
        )
        self.succeeded = Counter(
            "conveyor_tasks_succeeded_total", "Attempts that succeeded.", _LABELS, registry=r
        )
        self.failed = Counter(
            "conveyor_tasks_failed_total",
            "Attempts that failed (raised, timed out, cancelled or unreadable).",
            _LABELS,
            registry=r,
        )
        self.retried = Counter(
            "conveyor_tasks_retried_total",
            "Failed attempts recorded for a retry.",
            _LABELS,
            registry=r,
        )
        self.archived = Counter(
            "conveyor_tasks_archived_total",
            "Failed attempts recorded as archived (dead).",
            _LABELS,
            registry=r,
        )
        self.duration = Histogram(
            "conveyor_task_duration_seconds",
            "How long handlers ran, per finished attempt.",
            _LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )

    # -- sources -------------------------------------------------------------------------------

    def observe(self, signals: Signals) -> None:
        """Count the attempts ``signals`` reports (a worker's ``server.signals``)."""
        signals.task_succeeded.connect(self._on_succeeded)
        signals.task_failed.connect(self._on_failed)
        signals.task_retried.connect(lambda e: self.retried.labels(e.queue, e.task_type).inc())
        signals.task_archived.connect(lambda e: self.archived.labels(e.queue, e.task_type).inc())

    def watch_server(self, server: Server) -> None:
        """Report ``server``'s running tasks, lease recoveries and broker errors."""
        self.registry.register(_ServerCollector(server))

    def watch_queues(self, inspector: Inspector) -> None:
        """Report every queue's sizes, latency and pause flag, and the live workers."""
        self.registry.register(_QueueCollector(inspector))

    def serve(self, port: int, addr: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` on ``addr:port`` from a background thread.

        Binds the loopback interface unless told otherwise (``addr="0.0.0.0"`` for a Prometheus
        on another machine).
        """
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(server)

    # -- receivers -----------------------------------------------------------------------------

    def _finished(self, event: TaskEvent) -> None:
        self.processed.labels(event.queue, event.task_type).inc()
        if event.duration_s is not None:
            self.duration.labels(event.queue, event.task_type).observe(event.duration_s)

    def _on_succeeded(self, event: TaskEvent) -> None:
        self._finished(event)
        self.succeeded.labels(event.queue, event.task_type).inc()

    def _on_failed(self, event: TaskEvent) -> None:
        self._finished(event)
        self.failed.labels(event.queue, event.task_type).inc()


class _ServerCollector(Collector):
    """One worker's own numbers, read at scrape time."""

    def __init__(self, server: Server) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        stats = self._server.stats
        yield GaugeMetricFamily(
            "conveyor_tasks_active",
            "Attempts this worker is running now.",
            value=self._server.running_tasks,
        )
        yield CounterMetricFamily(
            "conveyor_lease_recoveries",
            "Tasks of lost workers this worker recovered (their lease had lapsed).",
            value=stats.recovered,
        )
        yield CounterMetricFamily(
            "conveyor_broker_errors",
            "Broker calls of this worker that failed (each retried or left to recovery).",
            value=stats.broker_errors,
        )
        yield CounterMetricFamily(
            "conveyor_leases_lost",
            "Attempts whose lease was lost (their outcome was refused).",
            value=stats.lease_lost,
        )


class _QueueCollector(Collector):
    """Queue gauges and live workers, queried from the broker at scrape time."""

    def __init__(self, inspector: Inspector) -> None:
        self._inspector = inspector

    def collect(self) -> Iterator[Metric]:
        try:
            readings = [
                (self._inspector.queue_info(queue), self._inspector.queue_latency(queue))
                for queue in self._inspector.queues()
            ]
            workers = len(self._inspector.list_workers())
        except ConveyorError as exc:
            logger.warning("metrics: could not read the broker (%s)", exc)
            yield from queue_families(None, 0)
            return
        yield from queue_families(readings, workers)


QueueReading = tuple[QueueStats, timedelta]
"""One queue's counts and the age of its oldest pending task."""


def queue_families(readings: list[QueueReading] | None, workers: int) -> list[Metric]:
    """The queue gauges of ``readings`` and the live-worker count, as metric families.

    ``None`` means the broker could not be read: only ``conveyor_broker_up 0`` is reported, so
    a dashboard never shows stale sizes as current.
    """
    up = GaugeMetricFamily("conveyor_broker_up", "1 when the last scrape read the broker.")
    if readings is None:
        up.add_metric([], 0)
        return [up]
    size = GaugeMetricFamily(
        "conveyor_queue_size", "Tasks in the queue by state.", labels=["queue", "state"]
    )
    latency = GaugeMetricFamily(
        "conveyor_queue_latency_seconds",
        "How long the oldest pending task has waited to be claimed.",
        labels=["queue"],
    )
    paused = GaugeMetricFamily(
        "conveyor_queue_paused", "1 while the queue is paused.", labels=["queue"]
    )
    processed = GaugeMetricFamily(
        "conveyor_queue_processed_today",
        "Attempts finished today (UTC) by every worker (resets at midnight).",
        labels=["queue"],
    )
    failed = GaugeMetricFamily(
        "conveyor_queue_failed_today",
        "Attempts failed today (UTC) by every worker (resets at midnight).",
        labels=["queue"],
    )
    for stats, age in readings:
        for state in TaskState:
            size.add_metric([stats.queue, state.value], getattr(stats, state.value))
        paused.add_metric([stats.queue], float(stats.paused))
        processed.add_metric([stats.queue], stats.processed_today)
        failed.add_metric([stats.queue], stats.failed_today)
        latency.add_metric([stats.queue], age.total_seconds())
    up.add_metric([], 1)
    live = GaugeMetricFamily("conveyor_workers", "Live workers (registered, not lapsed).")
    live.add_metric([], workers)
    return [up, size, latency, paused, processed, failed, live]


class _Families(Collector):
    """Metric families read beforehand (by async code) and reported as they are."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


async def queue_exposition(inspector: AsyncInspector) -> bytes:
    """The queue gauges and live workers in Prometheus' text format, read with ``inspector``.

    What :meth:`Metrics.watch_queues` reports, for async code that serves its own ``/metrics``
    (the dashboard's). A broker that cannot be read gives ``conveyor_broker_up 0`` alone.
    """
    try:
        readings = [
            (await inspector.queue_info(queue), await inspector.queue_latency(queue))
            for queue in await inspector.queues()
        ]
        families = queue_families(readings, len(await inspector.list_workers()))
    except ConveyorError as exc:
        logger.warning("metrics: could not read the broker (%s)", exc)
        families = queue_families(None, 0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)
