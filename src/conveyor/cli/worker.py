"""``conveyor worker MODULE:ATTR``: run a worker for an App, a ServeMux or a handler."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from datetime import timedelta

import click

from conveyor.app import App
from conveyor.brokers.protocol import MAX_CRASH_ATTEMPTS, Broker
from conveyor.cli.params import (
    LOG_FORMATS,
    LOG_LEVELS,
    Duration,
    configure_logging,
    debugging,
    one_line,
    parse_queues,
)
from conveyor.config import BROKER_URL_ENV, DEFAULT_BROKER_URL
from conveyor.errors import ConveyorError
from conveyor.inspector import Inspector
from conveyor.metrics import Metrics
from conveyor.middleware import Handler
from conveyor.scheduling.scheduler import Scheduler
from conveyor.worker.loops import LOOP_CHOICES, LoopChoice
from conveyor.worker.server import Server

logger = logging.getLogger(__name__)


def load_target(spec: str) -> object:
    """Import ``module:attr`` (the current directory is importable, as with ``python -m``).

    Raises:
        click.BadParameter: a malformed spec, a module that fails to import, a missing attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"{spec!r} must look like module:attribute", param_hint="TARGET")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="TARGET"
        ) from None
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attr!r}", param_hint="TARGET"
            ) from None
    return target


def resolve(target: object, broker: str | None) -> tuple[Handler, str | Broker]:
    """The handler to serve and the broker to use: --broker, then the env var, then the App's."""
    if isinstance(target, App):
        handler: Handler = target.mux
        fallback: str | Broker = target.broker
    elif callable(target):
        handler, fallback = target, DEFAULT_BROKER_URL
    else:
        raise click.BadParameter(
            f"{type(target).__name__} is not an App, a ServeMux or a handler", param_hint="TARGET"
        )
    return handler, broker or os.environ.get(BROKER_URL_ENV) or fallback


def scheduler_for(app: App, broker: str | None) -> Scheduler:
    """A scheduler writing ``app``'s entries, on --broker, else the env var, else the app's."""
    return app.scheduler(broker or os.environ.get(BROKER_URL_ENV) or None)


@contextlib.contextmanager
def serving_metrics(
    server: Server, broker: str | Broker, port: int | None, addr: str
) -> Iterator[None]:
    """Serve ``server``'s metrics (and the broker's queue gauges) while the block runs."""
    if port is None:
        yield
        return
    metrics = Metrics()
    metrics.observe(server.signals)
    metrics.watch_server(server)
    # Queue gauges need a broker of their own (the scrape runs on the HTTP server's thread):
    # one opened from the URL. A Broker object belongs to the worker's loop alone.
    inspector = Inspector(broker) if isinstance(broker, str) else None
    if inspector is not None:
        metrics.watch_queues(inspector)
    http = metrics.serve(port, addr)
    logger.info(
        "metrics at http://%s:%d/metrics", addr if ":" not in addr else f"[{addr}]", http.port
    )
    try:
        yield
    finally:
        http.close()
        if inspector is not None:
            inspector.close()


@click.command(
    epilog="""\b
Examples:
  conveyor worker myproject.tasks:app
  conveyor worker myproject.tasks:app --broker redis://localhost:6379/0 -c 50
  conveyor worker myproject.tasks:mux -q critical=6 -q default=3 -q low=1
  conveyor worker myproject.tasks:app --strict -q critical -q default
  conveyor worker myproject.tasks:app --metrics-port 9090 --log-format json

SIGTERM or Ctrl-C shuts down gracefully: running tasks get --shutdown-timeout to
finish, the rest go back to their queue. SIGTSTP stops taking new tasks.
A worker of an App with schedules also runs a scheduler (--no-scheduler: not)."""
)
@click.argument("target", metavar="MODULE:ATTR")
@click.option(
    "--broker",
    "-b",
    metavar="URL",
    help="Broker URL (default: $CONVEYOR_BROKER_URL, the App's URL, or sqlite:///conveyor.db).",
)
@click.option("--concurrency", "-c", type=click.IntRange(min=1), help="Tasks run at once.")
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    metavar="NAME[=WEIGHT]",
    help="Queue to serve, with a priority weight (repeatable; default: default=1).",
)
@click.option("--strict", is_flag=True, help="Strict priority: always drain heavier queues first.")
@click.option(
    "--lease",
    type=Duration(),
    default="30s",
    show_default=True,
    help="How long a claim lasts without renewal.",
)
@click.option(
    "--shutdown-timeout",
    type=Duration(),
    default="8s",
    show_default=True,
    help="How long running tasks may take to finish on shutdown.",
)
@click.option(
    "--sync-cancel-grace",
    type=Duration(),
    default="1s",
    show_default=True,
    help="How long an interrupted sync handler may take to return before its thread is abandoned.",
)
@click.option(
    "--recover-interval",
    type=Duration(),
    default="5s",
    show_default=True,
    help="Time between scans for tasks of crashed workers.",
)
@click.option(
    "--recover-delay",
    type=Duration(),
    default="1s",
    show_default=True,
    help="Longest wait of a recovered task before it runs again (each waits half to all of it).",
)
@click.option(
    "--max-crash-attempts",
    type=click.IntRange(min=1),
    default=MAX_CRASH_ATTEMPTS,
    show_default=True,
    help="Lost leases after which a task is archived (it keeps killing its worker).",
)
@click.option(
    "--loop",
    type=click.Choice(LOOP_CHOICES),
    default="auto",
    show_default=True,
    help="Event loop: uvloop when installed (auto), or asyncio / uvloop.",
)
@click.option(
    "--scheduler/--no-scheduler",
    "run_scheduler",
    default=None,
    help="Also fire schedule entries (default: when the App defines schedules).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object per line, with task_id, task_type, queue, attempt in a task.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics at http://ADDR:PORT/metrics (see docs/metrics.md).",
)
@click.option(
    "--metrics-addr",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics server binds (0.0.0.0 for a Prometheus on another machine).",
)
def worker(
    target: str,
    broker: str | None,
    concurrency: int | None,
    queues: tuple[str, ...],
    strict: bool,
    lease: timedelta,
    shutdown_timeout: timedelta,
    sync_cancel_grace: timedelta,
    recover_interval: timedelta,
    recover_delay: timedelta,
    max_crash_attempts: int,
    loop: LoopChoice,
    run_scheduler: bool | None,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_addr: str,
) -> None:
    """Run a worker that serves MODULE:ATTR (an App, a ServeMux or a handler function)."""
    configure_logging(log_level, log_format)
    found = load_target(target)
    handler, broker_arg = resolve(found, broker)
    schedules: Scheduler | None = None
    if run_scheduler and not isinstance(found, App):
        raise click.BadParameter("--scheduler needs an App", param_hint="TARGET")
    if isinstance(found, App) and (run_scheduler or (run_scheduler is None and found.schedules)):
        # On a thread of its own: a handler blocking the worker's loop cannot delay a fire.
        schedules = scheduler_for(found, broker)
        schedules.start()
    try:
        server = Server(
            broker_arg,
            concurrency=concurrency,
            queues=parse_queues(queues),
            strict_priority=strict,
            lease=lease,
            shutdown_timeout=shutdown_timeout,
            sync_cancel_grace=sync_cancel_grace,
            recover_interval=recover_interval,
            recover_delay=recover_delay,
            max_crash_attempts=max_crash_attempts,
        )
        if isinstance(found, App):
            server.signals = found.signals  # receivers the app's module connected
        with serving_metrics(server, broker_arg, metrics_port, metrics_addr):
            server.run(handler, loop=loop)
    except (ConveyorError, ValueError, OSError) as exc:
        if debugging():
            raise
        raise one_line(exc) from None
    finally:
        if schedules is not None:
            schedules.stop()
