"""``conveyor server``: serve masenko and Faktory clients over a shared broker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from datetime import timedelta

import click

from conveyor.brokers import open_broker
from conveyor.cli.params import LOG_LEVELS, Duration, configure_logging
from conveyor.config import BROKER_URL_ENV, DEFAULT_BROKER_URL
from conveyor.errors import ConveyorError
from conveyor.server.config import (
    DEFAULT_FAKTORY_PORT,
    DEFAULT_MASENKO_PORT,
    Endpoint,
    ServerConfig,
)
from conveyor.server.core import TaskServer
from conveyor.server.metrics import ServerMetrics
from conveyor.worker.loops import LOOP_CHOICES, LoopChoice, loop_factory
from conveyor.worker.server import GC_YOUNG_THRESHOLD

logger = logging.getLogger(__name__)

PASSWORD_ENV = "CONVEYOR_SERVER_PASSWORD"  # noqa: S105 (a variable name)


@click.command(
    epilog="""\b
Examples:
  conveyor server -b sqlite:///tasks.db                   # masenko on 127.0.0.1:12345
  conveyor server -b redis://localhost:6379/0 --faktory :7419
  conveyor server --masenko 127.0.0.1:12345 --faktory 127.0.0.1:7419 --password s3cret

With neither --masenko nor --faktory, masenko is served on 127.0.0.1:12345. Ports bind
loopback unless a host is given; a public bind prints a warning (masenko has no
authentication; Faktory without --password has none either). SIGTERM or Ctrl-C first
tells Faktory workers to terminate (their BEAT answers terminate; FETCH hands out nothing)
for up to --shutdown-grace, ending early once they hold nothing; then it stops accepting,
gives every fetched, unacknowledged task back to its queue and exits. A second SIGTERM
cuts the grace short. SIGTSTP quiets Faktory workers (their BEAT answers quiet; FETCH
hands out nothing)."""
)
@click.option("--broker", "-b", metavar="URL", help="Broker URL (default: $CONVEYOR_BROKER_URL).")
@click.option("--masenko", metavar="HOST:PORT", envvar="MASENKO_LISTEN_TCP",
              help="Serve masenko's line protocol here (or $MASENKO_LISTEN_TCP).")  # fmt: skip
@click.option("--faktory", metavar="HOST:PORT", help="Serve Faktory's Work Protocol here.")
@click.option("--password", help=f"Faktory password (default: ${PASSWORD_ENV}).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM cert: TLS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM key for it.")
@click.option("--masenko-heartbeat", type=Duration(), default="45s", show_default=True,
              envvar="MASENKO_HEARTBEAT",
              help="masenko: close a silent connection (or $MASENKO_HEARTBEAT).")  # fmt: skip
@click.option("--idle-timeout", type=Duration(), default="5m", show_default=True,
              help="Faktory: close a connection silent this long.")  # fmt: skip
@click.option("--max-line", type=click.IntRange(min=64), default=1024 * 1024, show_default=True,
              help="Longest request line in bytes.")  # fmt: skip
@click.option("--max-payload", type=click.IntRange(min=1), default=64 * 1024, show_default=True,
              help="masenko: largest payload in bytes.")  # fmt: skip
@click.option("--max-connections", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Connections over this many are refused.")  # fmt: skip
@click.option("--lease", type=Duration(), default="30s", show_default=True,
              help="Broker lease of a fetched task (renewed while its holder lives).")  # fmt: skip
@click.option("--no-flush", is_flag=True, help="Faktory: refuse FLUSH.")
@click.option("--shutdown-grace", type=Duration(), default="20s", show_default=True,
              help="On SIGTERM, how long Faktory workers get to hear terminate.")  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on this port (/metrics).")  # fmt: skip
@click.option("--metrics-addr", default="127.0.0.1", show_default=True,
              help="Interface of the metrics port.")  # fmt: skip
@click.option("--loop", type=click.Choice(LOOP_CHOICES), default="auto", show_default=True,
              help="Event loop: uvloop when installed (auto), or asyncio / uvloop.")  # fmt: skip
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info",
              show_default=True)  # fmt: skip
def server(
    broker: str | None,
    masenko: str | None,
    faktory: str | None,
    password: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    masenko_heartbeat: timedelta,
    idle_timeout: timedelta,
    max_line: int,
    max_payload: int,
    max_connections: int,
    lease: timedelta,
    no_flush: bool,
    shutdown_grace: timedelta,
    metrics_port: int | None,
    metrics_addr: str,
    loop: LoopChoice,
    log_level: str,
) -> None:
    """Run a task server for masenko and Faktory clients (any language) over a broker."""
    configure_logging(log_level)
    try:
        if masenko is None and faktory is None:
            masenko = f"127.0.0.1:{DEFAULT_MASENKO_PORT}"
        config = ServerConfig(
            masenko=None
            if masenko is None
            else Endpoint.parse(masenko, default_port=DEFAULT_MASENKO_PORT),
            faktory=None
            if faktory is None
            else Endpoint.parse(faktory, default_port=DEFAULT_FAKTORY_PORT),
            password=password or os.environ.get(PASSWORD_ENV) or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
            heartbeat_s=masenko_heartbeat.total_seconds(),
            idle_timeout_s=idle_timeout.total_seconds(),
            max_line_bytes=max_line,
            max_payload_bytes=max_payload,
            max_connections=max_connections,
            lease_s=lease.total_seconds(),
            flush=not no_flush,
            shutdown_grace_s=shutdown_grace.total_seconds(),
        )
        url = broker or os.environ.get(BROKER_URL_ENV) or DEFAULT_BROKER_URL
        name, factory = loop_factory(loop)
        logger.debug("event loop: %s", name)
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(url, config, metrics_port, metrics_addr))
    except (ConveyorError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _tune_gc() -> None:
    """Make the cyclic garbage collector cheap, as a worker does: every request allocates
    (futures, leases, messages), and at Python's default threshold the collector runs
    thousands of times a second and walks every object made at import time."""
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    if young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _quiet(task_server: TaskServer) -> None:
    logger.info("quiet: Faktory workers are told to stop fetching")
    task_server.quiet = True


async def _serve(url: str, config: ServerConfig, metrics_port: int | None, addr: str) -> None:
    broker = open_broker(url)
    metrics = ServerMetrics() if metrics_port is not None else None
    http = None
    try:
        info = await broker.describe()
        task_server = TaskServer(broker, config, metrics=metrics)
        await task_server.start()
        _tune_gc()
        if metrics is not None and metrics_port is not None:
            http = metrics.serve(metrics_port, addr)
            shown = addr if ":" not in addr else f"[{addr}]"
            logger.info("metrics at http://%s:%d/metrics", shown, http.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGTSTP, _quiet, task_server)
        ports = ", ".join(f"{name} {h}:{p}" for name, (h, p) in task_server.addresses.items())
        # Process tests and scripts wait for this line.
        print(f"conveyor server ready: {ports} on {info.location}", file=sys.stderr, flush=True)
        await stop.wait()
        stop.clear()
        logger.info("stopping: Faktory workers are told to terminate")
        stopping = asyncio.create_task(task_server.stop())
        cut = asyncio.create_task(stop.wait())  # a second signal ends the grace period
        await asyncio.wait([stopping, cut], return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
            logger.info("stopping now: giving fetched tasks back")
            await task_server.stop(grace_s=0)
        cut.cancel()
    finally:
        if http is not None:
            http.close()
        await broker.close()
