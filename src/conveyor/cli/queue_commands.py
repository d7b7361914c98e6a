"""``conveyor queue ...``: list queues, pause or resume them, limit them, delete them."""

from __future__ import annotations

import dataclasses

import click

from conveyor.cli.inspect_commands import broker_option, echo_json, inspector_for, json_option
from conveyor.errors import QueueInUseError, QueueNotEmptyError


@click.group(
    epilog="""\b
Examples:
  conveyor queue ls
  conveyor queue pause emails
  conveyor queue limit emails 10000 --overflow drop-oldest
  conveyor queue concurrency reports 2
  conveyor queue unpause emails --broker redis://localhost:6379/0
  conveyor queue delete old-emails --force"""
)
def queue() -> None:
    """List queues, pause or resume them, limit their length, or delete them."""


@queue.command("ls", epilog="\b\nExamples:\n  conveyor queue ls\n  conveyor queue ls -b URL --json")
@broker_option
@json_option
def queue_ls(broker: str | None, as_json: bool) -> None:
    """Show every queue with its task counts by state, paused flag and length limit."""
    columns = ("pending", "scheduled", "active", "retry", "archived", "completed")
    with inspector_for(broker) as inspector:
        rows = [(inspector.queue_info(n), inspector.queue_limit(n)) for n in inspector.queues()]
    if as_json:
        echo_json(
            [
                {**dataclasses.asdict(r), "overflow": None if limit is None else limit.overflow}
                for r, limit in rows
            ]
        )
        return
    if not rows:
        click.echo("no queues")
        return
    width = max(len("queue"), *(len(r.queue) for r, _ in rows))
    header = "  ".join(f"{c:>9}" for c in columns)
    click.echo(f"{'queue':<{width}}  {header}  paused  limit")
    for r, limit in rows:
        counts = "  ".join(f"{getattr(r, c):>9}" for c in columns)
        shown = "-" if limit is None else f"{limit.max_length} ({_OVERFLOW_NAMES[limit.overflow]})"
        click.echo(f"{r.queue:<{width}}  {counts}  {'yes' if r.paused else 'no':>6}  {shown}")


_OVERFLOW_NAMES = {"reject": "reject", "drop_oldest": "drop-oldest"}


def _count_or_none(text: str, *, least: int) -> int | None:
    if text.lower() == "none":
        return None
    if text.isdigit() and int(text) >= least:
        return int(text)
    raise click.BadParameter(f"{text!r} is not a whole number >= {least} or 'none'", param_hint="N")


@queue.command(
    "concurrency",
    epilog="""\b
Examples:
  conveyor queue concurrency reports 2
  conveyor queue concurrency reports none""",
)
@click.argument("name")
@click.argument("max_active", metavar="N|none")
@broker_option
def queue_concurrency(name: str, max_active: str, broker: str | None) -> None:
    """Let at most N tasks of queue NAME run at once across all workers ("none": no limit).

    Workers pass over a queue at its limit as if it were empty, and take from it again as
    soon as one of its tasks finishes.
    """
    n = _count_or_none(max_active, least=1)
    with inspector_for(broker) as inspector:
        inspector.set_queue_concurrency(name, n)
    if n is None:
        click.echo(f"removed the concurrency limit of {name}")
    else:
        click.echo(f"at most {n} tasks of {name} run at once")


@queue.command(
    "limit",
    epilog="""\b
Examples:
  conveyor queue limit emails 10000
  conveyor queue limit metrics 500 --overflow drop-oldest
  conveyor queue limit emails none""",
)
@click.argument("name")
@click.argument("max_length", metavar="N|none")
@click.option(
    "--overflow",
    type=click.Choice(["reject", "drop-oldest"]),
    default="reject",
    show_default=True,
    help="When full: refuse new tasks, or archive the oldest pending ones to make room.",
)
@broker_option
def queue_limit(name: str, max_length: str, overflow: str, broker: str | None) -> None:
    """Limit queue NAME to N pending, scheduled and retry tasks ("none" removes the limit).

    With reject, an enqueue past the limit fails with QueueFullError and stores nothing. With
    drop-oldest, the oldest pending tasks are archived ("dropped: queue full") to make room.
    """
    length = _count_or_none(max_length, least=0)
    with inspector_for(broker) as inspector:
        inspector.set_queue_limit(name, length, overflow.replace("-", "_"))
    if length is None:
        click.echo(f"removed the length limit of {name}")
    else:
        click.echo(f"limited {name} to {length} waiting tasks ({overflow} when full)")


@queue.command("pause", epilog="\b\nExamples:\n  conveyor queue pause emails")
@click.argument("name")
@broker_option
def queue_pause(name: str, broker: str | None) -> None:
    """Stop workers claiming tasks from queue NAME (enqueueing still works)."""
    with inspector_for(broker) as inspector:
        inspector.pause_queue(name)
    click.echo(f"paused {name}")


@queue.command("unpause", epilog="\b\nExamples:\n  conveyor queue unpause emails")
@click.argument("name")
@broker_option
def queue_unpause(name: str, broker: str | None) -> None:
    """Let workers claim tasks from queue NAME again."""
    with inspector_for(broker) as inspector:
        inspector.unpause_queue(name)
    click.echo(f"unpaused {name}")


@queue.command(
    "delete",
    epilog="\b\nExamples:\n  conveyor queue delete old-emails\n"
    "  conveyor queue delete old-emails --force",
)
@click.argument("name")
@click.option(
    "--force",
    is_flag=True,
    help="Also delete the tasks it holds (never while any is active).",
)
@broker_option
def queue_delete(name: str, force: bool, broker: str | None) -> None:
    """Delete queue NAME with its counters, pause flag and unique locks.

    Without --force only a queue holding no task is deleted. With --force its pending,
    scheduled, retry, archived and completed tasks are deleted too; a queue with an active task
    (a worker is running it) is never deleted.
    """
    with inspector_for(broker) as inspector:
        try:
            inspector.delete_queue(name, force=force)
        except QueueNotEmptyError as exc:
            raise click.ClickException(
                f"queue {name} holds {exc.tasks} task(s); nothing deleted. "
                "Use --force to delete the queue and its tasks."
            ) from None
        except QueueInUseError as exc:
            raise click.ClickException(
                f"queue {name} has {exc.active} active task(s) that workers are running; "
                "nothing deleted. Pause it, let them finish, then try again."
            ) from None
    click.echo(f"deleted queue {name}")
