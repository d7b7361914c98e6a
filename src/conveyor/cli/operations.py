"""``conveyor stats``, ``conveyor workers`` and ``conveyor task cancel``: what runs, right now."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from conveyor.brokers.workers import WorkerInfo
from conveyor.cli.inspect_commands import (
    broker_option,
    echo_json,
    inspector_for,
    json_option,
)
from conveyor.cli.task_commands import task
from conveyor.inspector import Inspector
from conveyor.message import QueueStats

_STATES = ("pending", "scheduled", "active", "retry", "archived", "completed")
_HEADINGS = ("pending", "sched", "active", "retry", "archived", "done")


def _console() -> Console:
    # Piped or redirected output gets whole rows rather than an 80-column squeeze.
    console = Console()
    return console if console.is_terminal else Console(width=200)


@dataclass(frozen=True, slots=True)
class QueueLine:
    """One queue's row of ``conveyor stats``."""

    stats: QueueStats
    processed_per_s: float
    failed_per_s: float
    oldest_pending_s: float

    def to_dict(self) -> dict[str, object]:
        """The row as ``--json`` prints it."""
        data: dict[str, object] = {"queue": self.stats.queue}
        data.update({state: getattr(self.stats, state) for state in _STATES})
        data.update(
            paused=self.stats.paused,
            processed_per_s=round(self.processed_per_s, 3),
            failed_per_s=round(self.failed_per_s, 3),
            oldest_pending_s=round(self.oldest_pending_s, 3),
            processed_today=self.stats.processed_today,
            failed_today=self.stats.failed_today,
        )
        return data


def _rate(now: int, before: int, seconds: float) -> float:
    # Today's totals restart at 0 at UTC midnight: a drop is a new day, not a negative rate.
    return max(now - before, 0) / seconds if seconds > 0 else 0.0


def _sample(inspector: Inspector) -> tuple[float, dict[str, QueueStats]]:
    return time.monotonic(), {q: inspector.queue_info(q) for q in inspector.queues()}


def _lines(
    inspector: Inspector,
    before: tuple[float, dict[str, QueueStats]],
    after: tuple[float, dict[str, QueueStats]],
) -> list[QueueLine]:
    seconds = after[0] - before[0]
    lines = []
    for name, stats in after[1].items():
        old = before[1].get(name, stats)
        lines.append(
            QueueLine(
                stats=stats,
                processed_per_s=_rate(stats.processed_today, old.processed_today, seconds),
                failed_per_s=_rate(stats.failed_today, old.failed_today, seconds),
                oldest_pending_s=inspector.queue_latency(name).total_seconds(),
            )
        )
    return lines


def _table(lines: list[QueueLine], workers: int) -> Table:
    table = Table(title=f"conveyor: {workers} worker(s) alive", title_justify="left")
    table.add_column("queue", no_wrap=True)
    for heading in _HEADINGS:
        table.add_column(heading, justify="right")
    for heading in ("proc/s", "fail/s", "oldest"):
        table.add_column(heading, justify="right")
    table.add_column("paused")
    for line in lines:
        s = line.stats
        table.add_row(
            s.queue,
            *(str(getattr(s, state)) for state in _STATES),
            f"{line.processed_per_s:.1f}",
            f"{line.failed_per_s:.1f}",
            _age(line.oldest_pending_s),
            "yes" if s.paused else "no",
        )
    return table


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@click.command(
    "stats",
    epilog="""\b
Examples:
  conveyor stats                    # once: sizes, rates over 1 s, oldest pending, workers
  conveyor stats --watch            # live view, refreshed every second (Ctrl-C to quit)
  conveyor stats --json -b redis://localhost:6379/0""",
)
@broker_option
@json_option
@click.option("--watch", "-w", is_flag=True, help="Keep a live view on screen until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between the two readings a rate is measured over (and between refreshes).",
)
def stats(broker: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Every queue's sizes by state, processed and failed per second, the age of its oldest
    pending task, and the workers alive."""
    with inspector_for(broker) as inspector:
        before = _sample(inspector)
        if not watch:
            time.sleep(interval)  # a rate needs two readings
            lines = _lines(inspector, before, after := _sample(inspector))
            workers = len(inspector.list_workers())
            if as_json:
                echo_json({"workers": workers, "queues": [line.to_dict() for line in lines]})
            else:
                _console().print(_table(lines, workers))
            return
        try:
            with Live(_table([], 0), console=_console(), auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    after = _sample(inspector)
                    workers = len(inspector.list_workers())
                    live.update(_table(_lines(inspector, before, after), workers), refresh=True)
                    before = after
        except KeyboardInterrupt:
            return


def _worker_row(w: WorkerInfo, now: datetime) -> tuple[str, ...]:
    queues = ",".join(f"{name}={weight}" for name, weight in w.queues.items())
    return (
        w.id,
        w.host,
        str(w.pid),
        queues,
        f"{len(w.active)}/{w.concurrency}",
        w.started_at.isoformat(timespec="seconds"),
        f"{(now - w.last_heartbeat).total_seconds():.1f}s ago",
        w.version,
    )


@click.command(
    "workers",
    epilog="""\b
Examples:
  conveyor workers
  conveyor workers --json | jq '.[].active'""",
)
@broker_option
@json_option
def workers(broker: str | None, as_json: bool) -> None:
    """List the live workers: host, pid, queues, busy slots, start time, last heartbeat."""
    with inspector_for(broker) as inspector:
        found = inspector.list_workers()
    if as_json:
        echo_json([w.to_dict() for w in found])
        return
    if not found:
        click.echo("no workers alive")
        return
    table = Table()
    for heading in ("id", "host", "pid", "queues", "busy", "started", "heartbeat", "version"):
        table.add_column(heading)
    now = datetime.now(UTC)
    for w in found:
        table.add_row(*_worker_row(w, now))
    _console().print(table)


@task.command(
    "cancel",
    epilog="""\b
Examples:
  conveyor task cancel default 5b0c...

The worker running the task stops it within about a second; the task ends
archived with the error "cancelled" (never retried). A task that is not
running cannot be cancelled: archive or delete it instead.""",
)
@click.argument("queue_name", metavar="QUEUE")
@click.argument("task_id", metavar="ID")
@broker_option
def task_cancel(queue_name: str, task_id: str, broker: str | None) -> None:
    """Cancel a running task: its worker stops the handler and archives it."""
    with inspector_for(broker) as inspector:
        inspector.cancel_task(queue_name, task_id)
    click.echo(f"cancel requested for {task_id}; its worker stops it within about a second")
