"""``conveyor enqueue TYPE [JSON]``: enqueue one task from the shell."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import click

from conveyor.cli.params import Duration, When, debugging, one_line
from conveyor.client import Client
from conveyor.config import broker_url_from_env
from conveyor.errors import ConveyorError
from conveyor.message import JSONValue, Task, TaskInfo
from conveyor.options import EnqueueOptions


def format_info(info: TaskInfo) -> str:
    """A TaskInfo as aligned ``key: value`` lines (no payload: it may hold secrets)."""
    rows = [
        ("id", info.id),
        ("type", info.type),
        ("queue", info.queue),
        ("state", info.state.value),
        ("max_retry", str(info.max_retry)),
        ("next_process_at", info.next_process_at.isoformat() if info.next_process_at else "-"),
        ("payload_bytes", str(len(info.raw_payload))),
    ]
    return "\n".join(f"{key + ':':<17}{value}" for key, value in rows)


@click.command(
    epilog="""\b
Examples:
  conveyor enqueue email:welcome '{"user_id": 42}'
  conveyor enqueue report:build '{"id": 7}' --queue low --in 10m
  conveyor enqueue cleanup --at 2030-01-31T03:00:00Z --id cleanup-2030-01-31
  conveyor enqueue myproject.tasks.send_welcome '{"user_id": 42}' --max-retry 3

For an @app.task function, TYPE is its name (module.function) and JSON maps
parameter names to values."""
)
@click.argument("task_type", metavar="TYPE")
@click.argument("payload", metavar="[JSON]", required=False)
@click.option("--queue", "-q", default="default", show_default=True, help="Queue name.")
@click.option(
    "--in", "delay", type=Duration(), metavar="DURATION", help="Run after a delay: 10s, 5m, 1h."
)
@click.option(
    "--at", "when", type=When(), metavar="ISO", help="Run at an ISO 8601 time (UTC if no zone)."
)
@click.option("--id", "task_id", help="Custom task id (a live task with the same id is refused).")
@click.option(
    "--max-retry", type=click.IntRange(min=0), help="Retries before archiving (default 25)."
)
@click.option(
    "--timeout", type=Duration(), metavar="DURATION", help="Per-attempt limit (default 30m)."
)
@click.option(
    "--broker",
    "-b",
    metavar="URL",
    help="Broker URL (default: $CONVEYOR_BROKER_URL or sqlite:///conveyor.db).",
)
def enqueue(
    task_type: str,
    payload: str | None,
    queue: str,
    delay: timedelta | None,
    when: datetime | None,
    task_id: str | None,
    max_retry: int | None,
    timeout: timedelta | None,
    broker: str | None,
) -> None:
    """Enqueue a task of type TYPE with an optional JSON payload, and print its info."""
    if delay is not None and when is not None:
        raise click.UsageError("use either --in or --at, not both")
    data: JSONValue = None
    if payload is not None:
        try:
            data = json.loads(payload)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="JSON") from None
    options: EnqueueOptions = {"queue": queue}
    if task_id is not None:
        options["task_id"] = task_id
    if max_retry is not None:
        options["max_retry"] = max_retry
    if timeout is not None:
        options["timeout"] = timeout
    if delay is not None:
        options["process_in"] = delay
    if when is not None:
        options["process_at"] = when
    try:
        with Client(broker or broker_url_from_env()) as client:
            info = client.enqueue(Task(task_type, data), **options)
    except (ConveyorError, ValueError, TypeError, OSError) as exc:
        if debugging():
            raise
        raise one_line(exc) from None
    click.echo(format_info(info))
