"""``conveyor schedule ...`` (list and steer schedule entries) and ``conveyor scheduler``."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import datetime

import click

from conveyor.app import App
from conveyor.cli.inspect_commands import broker_option, inspector_for
from conveyor.cli.params import LOG_LEVELS, configure_logging
from conveyor.cli.worker import load_target, scheduler_for
from conveyor.errors import ConveyorError, ScheduleNotFoundError
from conveyor.scheduling.entry import ScheduleInfo
from conveyor.scheduling.scheduler import Scheduler


def _fires(s: ScheduleInfo) -> str:
    if s.cron is not None:
        return s.cron
    return "-" if s.every is None else f"every {s.every.total_seconds():g}s"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _as_json(s: ScheduleInfo) -> dict[str, object]:
    return {
        "name": s.name,
        "target": s.target.value,
        "task_type": s.task_type,
        "queue": s.queue,
        # A bytes payload has no JSON form: its size stands in for it.
        "payload": s.payload if not isinstance(s.payload, bytes) else None,
        "payload_bytes": len(s.payload) if isinstance(s.payload, bytes) else None,
        "cron": s.cron,
        "every_s": None if s.every is None else s.every.total_seconds(),
        "tz": s.tz,
        "missed": s.missed.value,
        "next_fire_at": None if s.next_fire_at is None else s.next_fire_at.isoformat(),
        "last_fire_at": None if s.last_fire_at is None else s.last_fire_at.isoformat(),
        "last_task_id": s.last_task_id,
        "paused": s.paused,
        "owner": s.owner,
    }


@click.group(
    epilog="""\b
Examples:
  conveyor schedule ls
  conveyor schedule ls --json
  conveyor schedule pause nightly-report
  conveyor schedule unpause nightly-report
  conveyor schedule rm old-sync -b redis://localhost:6379/0"""
)
def schedule() -> None:
    """List schedule entries, pause or resume them, or remove them."""


@schedule.command(
    "ls", epilog="\b\nExamples:\n  conveyor schedule ls\n  conveyor schedule ls --json"
)
@broker_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def schedule_ls(broker: str | None, as_json: bool) -> None:
    """Show every schedule entry: what it fires (a task, or a chain, group, chord or linked
    signature), when it fires, when it last fired, whether it is paused."""
    with inspector_for(broker) as inspector:
        entries = inspector.list_schedules()
    if as_json:
        click.echo(json.dumps([_as_json(s) for s in entries], indent=2))
        return
    if not entries:
        click.echo("no schedules")
        return
    rows = [
        (
            s.name,
            s.target.value,
            _fires(s),
            s.tz,
            _when(s.next_fire_at),
            _when(s.last_fire_at),
            "paused" if s.paused else "code" if s.code_defined else "added",
        )
        for s in entries
    ]
    header = ("name", "target", "when", "tz", "next fire", "last fire", "status")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _steer(broker: str | None, name: str, verb: str) -> None:
    try:
        with inspector_for(broker) as inspector:
            getattr(inspector, f"{verb}_schedule")(name)
    except ScheduleNotFoundError as exc:
        raise click.ClickException(str(exc)) from None


@schedule.command("pause", epilog="\b\nExamples:\n  conveyor schedule pause nightly-report")
@click.argument("name")
@broker_option
def schedule_pause(name: str, broker: str | None) -> None:
    """Stop entry NAME firing (its fire times while paused are skipped)."""
    _steer(broker, name, "pause")
    click.echo(f"paused {name}")


@schedule.command("unpause", epilog="\b\nExamples:\n  conveyor schedule unpause nightly-report")
@click.argument("name")
@broker_option
def schedule_unpause(name: str, broker: str | None) -> None:
    """Let entry NAME fire again, from its next fire time."""
    _steer(broker, name, "unpause")
    click.echo(f"unpaused {name}")


@schedule.command("rm", epilog="\b\nExamples:\n  conveyor schedule rm old-sync")
@click.argument("name")
@broker_option
def schedule_rm(name: str, broker: str | None) -> None:
    """Remove entry NAME (one an app defines in code comes back when its scheduler starts)."""
    _steer(broker, name, "remove")
    click.echo(f"removed {name}")


def load_app(target: str) -> App:
    """The App at MODULE:ATTR (a usage error otherwise)."""
    found = load_target(target)
    if not isinstance(found, App):
        raise click.BadParameter(f"{type(found).__name__} is not an App", param_hint="TARGET")
    return found


async def _serve_until_signal(scheduler: Scheduler) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, scheduler.request_stop)
    await scheduler.serve()


@click.command(
    epilog="""\b
Examples:
  conveyor scheduler myproject.tasks:app
  conveyor scheduler myproject.tasks:app -b redis://localhost:6379/0

Workers of an app with schedules run a scheduler already; run this one when
no worker should (conveyor worker --no-scheduler) or for entries added with
the inspector. Any number may run: each fire time is enqueued once."""
)
@click.argument("target", metavar="MODULE:ATTR")
@broker_option
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
)
def scheduler(target: str, broker: str | None, log_level: str) -> None:
    """Fire schedule entries for the App at MODULE:ATTR (and every entry in its broker)."""
    configure_logging(log_level)
    app = load_app(target)
    try:
        asyncio.run(_serve_until_signal(scheduler_for(app, broker)))
    except (ConveyorError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
