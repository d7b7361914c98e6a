"""``conveyor server --metrics-port``: Prometheus metrics of the task server.

On an explicit registry, as :mod:`conveyor.metrics` does (never prometheus-client's global one),
with names in conveyor's ``conveyor_<thing>_<unit>`` form. A server without metrics uses
:class:`ServerCounters`, whose methods do nothing, so the request path pays nothing for them.

Label values are bounded: ``protocol`` is ``masenko`` or ``faktory``, ``verb`` one of the
protocol's verbs or ``other`` (a client sending garbage cannot grow the page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.metrics import MetricsServer

__all__ = ["FETCH_WAIT_BUCKETS", "ServerCounters", "ServerMetrics"]

FETCH_WAIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Buckets of ``conveyor_server_fetch_wait_seconds``: a ready task (ms) to a long blocking FETCH."""

VERBS = {
    "masenko": frozenset({"PING", "PUSH", "FETCH", "ACK", "NACK", "INFO", "QUIT", "ATOMIC"}),
    "faktory": frozenset(
        {"HELLO", "PUSH", "PUSHB", "FETCH", "ACK", "FAIL", "BEAT", "INFO", "FLUSH", "END"}
    ),
}
"""The verbs counted under their own name; any other is counted as ``other``."""


class ServerCounters:
    """What the server reports as it serves; this base class records nothing."""

    def request(self, protocol: str, verb: str, *, error: bool) -> None:
        """A request line was answered (``error``: with an error reply)."""

    def pushed(self, protocol: str, n: int = 1) -> None:
        """``n`` tasks were stored."""

    def fetched(self, protocol: str, wait_s: float, *, found: bool) -> None:
        """A FETCH was answered after ``wait_s`` seconds, with a task or empty."""

    def acked(self, protocol: str, n: int = 1) -> None:
        """``n`` tasks were acknowledged (completed)."""

    def failed(self, protocol: str) -> None:
        """A task's attempt was recorded as failed (NACK, FAIL or a dropped connection)."""


class ServerMetrics(ServerCounters):
    """The server's Prometheus collectors, registered on ``registry``.

    Example::

        metrics = ServerMetrics()
        server = TaskServer(broker, config, metrics=metrics)
        http = metrics.serve(9091)

    Args:
        registry: where to register (default: a new registry of its own).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        """The registry every collector of this object is on."""
        r = self.registry
        self._requests = Counter(
            "conveyor_server_requests_total",
            "Requests answered, by protocol and verb.",
            ["protocol", "verb"],
            registry=r,
        )
        self._errors = Counter(
            "conveyor_server_errors_total",
            "Requests answered with an error, by protocol and verb.",
            ["protocol", "verb"],
            registry=r,
        )
        tasks = {
            "pushed": "Tasks stored through the server.",
            "fetched": "Tasks handed out by FETCH.",
            "acked": "Tasks acknowledged (completed) through the server.",
            "failed": "Attempts recorded as failed (NACK, FAIL, or a connection dropped).",
        }
        self._tasks = {
            what: Counter(f"conveyor_server_tasks_{what}_total", doc, ["protocol"], registry=r)
            for what, doc in tasks.items()
        }
        self._fetch_wait = Histogram(
            "conveyor_server_fetch_wait_seconds",
            "How long a FETCH took to answer, with a task or empty.",
            ["protocol", "outcome"],
            buckets=FETCH_WAIT_BUCKETS,
            registry=r,
        )

    def watch(self, connections: Callable[[], dict[str, int]], held: Callable[[], int]) -> None:
        """Report open connections per protocol and held tasks, read at each scrape."""
        self.registry.register(_Gauges(connections, held))

    def serve(self, port: int, addr: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` on ``addr:port`` from a background thread (loopback by default)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(server)

    def request(self, protocol: str, verb: str, *, error: bool) -> None:
        """Count a request (and an error reply)."""
        shown = verb if verb in VERBS.get(protocol, ()) else "other"
        self._requests.labels(protocol, shown).inc()
        if error:
            self._errors.labels(protocol, shown).inc()

    def pushed(self, protocol: str, n: int = 1) -> None:
        """Count stored tasks."""
        self._tasks["pushed"].labels(protocol).inc(n)

    def fetched(self, protocol: str, wait_s: float, *, found: bool) -> None:
        """Count a handed-out task and observe the FETCH's wait."""
        if found:
            self._tasks["fetched"].labels(protocol).inc()
        self._fetch_wait.labels(protocol, "task" if found else "empty").observe(wait_s)

    def acked(self, protocol: str, n: int = 1) -> None:
        """Count acknowledged tasks."""
        self._tasks["acked"].labels(protocol).inc(n)

    def failed(self, protocol: str) -> None:
        """Count a failed attempt."""
        self._tasks["failed"].labels(protocol).inc()


class _Gauges(Collector):
    def __init__(self, connections: Callable[[], dict[str, int]], held: Callable[[], int]) -> None:
        self._connections = connections
        self._held = held

    def collect(self) -> Iterator[Metric]:
        open_ = GaugeMetricFamily(
            "conveyor_server_connections", "Open client connections.", labels=["protocol"]
        )
        for protocol, n in sorted(self._connections().items()):
            open_.add_metric([protocol], n)
        yield open_
        yield GaugeMetricFamily(
            "conveyor_server_tasks_held",
            "Fetched tasks not yet acknowledged, whose leases the server renews.",
            value=self._held(),
        )
