"""``conveyor queue ...`` and ``conveyor task ...``: the Inspector on the command line."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import click

from conveyor.cli.enqueue import format_info
from conveyor.cli.params import debugging, one_line
from conveyor.config import broker_url_from_env
from conveyor.errors import ConveyorError, QueueInUseError, QueueNotEmptyError
from conveyor.inspector import Inspector
from conveyor.message import AttemptRecord, TaskInfo, TaskState

STATES = [s.value for s in TaskState]
BROKER_HELP = "Broker URL (default: $CONVEYOR_BROKER_URL or sqlite:///conveyor.db)."


@contextmanager
def inspector_for(broker: str | None) -> Iterator[Inspector]:
    """An Inspector whose errors become one clean line (a traceback only with ``--debug``)."""
    try:
        with Inspector(broker or broker_url_from_env()) as inspector:
            yield inspector
    except (ConveyorError, ValueError, OSError) as exc:
        if debugging():
            raise
        raise one_line(exc) from None


def echo_json(data: object) -> None:
    """Print ``data`` as JSON (``--json``): one document, for scripts and ``jq``."""
    click.echo(json.dumps(data, indent=2, default=_json_value))


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


broker_option = click.option("--broker", "-b", metavar="URL", help=BROKER_HELP)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


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


@click.group(
    epilog="""\b
Examples:
  conveyor task ls default --state archived
  conveyor task show default 5b0c...
  conveyor task run default 5b0c...
  conveyor task run default --all archived
  conveyor task run default --all --state archived
  conveyor task delete low --all completed
  conveyor task cancel default 5b0c..."""
)
def task() -> None:
    """List, show, re-run, archive or delete tasks."""


@task.command(
    "ls",
    epilog="\b\nExamples:\n  conveyor task ls default\n"
    "  conveyor task ls emails --state retry --page 2 --size 50",
)
@click.argument("queue_name", metavar="QUEUE")
@click.option("--state", "-s", type=click.Choice(STATES), default="pending", show_default=True)
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--size", type=click.IntRange(1, 1000), default=20, show_default=True)
@broker_option
@json_option
def task_ls(
    queue_name: str, state: str, page: int, size: int, broker: str | None, as_json: bool
) -> None:
    """List one page of the tasks in QUEUE that are in a given state."""
    with inspector_for(broker) as inspector:
        tasks = inspector.list_tasks(queue_name, state, page=page, size=size)
    if as_json:
        echo_json([task_json(info) for info in tasks])
        return
    for info in tasks:
        when = info.next_process_at.isoformat(timespec="seconds") if info.next_process_at else "-"
        error = f"  {info.last_error}" if info.last_error else ""
        click.echo(f"{info.id}  {info.type}  retried={info.retried}  next={when}{error}")
    if not tasks:
        click.echo(f"no {state} tasks in {queue_name} (page {page})")


def task_json(info: TaskInfo) -> dict[str, object]:
    """What ``--json`` prints for a task: its stored fields, the payload's size not its bytes."""
    return {
        "id": info.id,
        "queue": info.queue,
        "type": info.type,
        "state": info.state.value,
        "payload_bytes": len(info.raw_payload),
        "max_retry": info.max_retry,
        "retried": info.retried,
        "last_error": info.last_error,
        "enqueued_at": info.enqueued_at,
        "next_process_at": info.next_process_at,
        "last_failed_at": info.last_failed_at,
        "completed_at": info.completed_at,
    }


@task.command("show", epilog="\b\nExamples:\n  conveyor task show default 5b0c... --json")
@click.argument("queue_name", metavar="QUEUE")
@click.argument("task_id", metavar="ID")
@broker_option
@json_option
def task_show(queue_name: str, task_id: str, broker: str | None, as_json: bool) -> None:
    """Show one task (its payload size, not its payload)."""
    with inspector_for(broker) as inspector:
        info = inspector.get_task(queue_name, task_id)
    headers = dict(info.headers)
    if as_json:
        history = [attempt_json(record) for record in info.history]
        echo_json({**task_json(info), "headers": headers, "history": history})
        return
    click.echo(format_info(info))
    click.echo(f"{'retried:':<17}{info.retried}")
    if info.last_error:
        click.echo(f"{'last_error:':<17}{info.last_error}")
    for name, value in headers.items():
        # As JSON strings: a header is any text, and control characters must not reach the tty.
        click.echo(f"{'header:':<17}{_quoted(name)}: {_quoted(value)}")
    for record in info.history:
        # A failed attempt: "attempt 2:       2026-01-05T10:00:01+00:00  ValueError: boom"
        when = record.failed_at.isoformat(timespec="seconds")
        click.echo(f"{f'attempt {record.attempt}:':<17}{when}  {_printable(record.error)}")
    for n, entry in enumerate(info.result_log, 1):
        # A pipeline's steps reached: "step 2: charge  succeeded  attempts=1"
        error = f"  error={entry.error}" if entry.error else ""
        line = f"{entry.step}  {entry.state}  attempts={entry.attempts}{error}"
        click.echo(f"{f'step {n}:':<17}{line}")


def attempt_json(record: AttemptRecord) -> dict[str, object]:
    """What ``--json`` prints for one failed attempt of a task's history."""
    return {"attempt": record.attempt, "failed_at": record.failed_at, "error": record.error}


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _printable(text: str) -> str:
    """The text as is, or quoted when it holds a newline or other control character."""
    return text if text.isprintable() else _quoted(text)


def _bulk_state(all_state: str | None, state: str | None) -> str | None:
    """The state of a bulk form (``--all STATE`` or ``--all --state STATE``), else ``None``."""
    if all_state is None:
        if state is not None:
            raise click.UsageError("--state goes with --all (conveyor task run Q --all --state S)")
        return None
    if all_state and state and all_state != state:
        raise click.UsageError(f"--all {all_state} and --state {state} disagree")
    chosen = all_state or state
    if not chosen:
        raise click.UsageError("--all needs a state: --all STATE or --all --state STATE")
    if chosen not in STATES:
        raise click.UsageError(f"unknown state {chosen!r}: one of {', '.join(STATES)}")
    return chosen


def _one_or_all(
    verb: str,
    single: Callable[[Inspector, str, str], None],
    bulk: Callable[[Inspector, str, str], int],
) -> Callable[[str, str | None, str | None, str | None, str | None], None]:
    def command(
        queue_name: str,
        task_id: str | None,
        all_state: str | None,
        state: str | None,
        broker: str | None,
    ) -> None:
        all_state = _bulk_state(all_state, state)
        if (task_id is None) == (all_state is None):
            raise click.UsageError("give either a task ID or --all STATE")
        with inspector_for(broker) as inspector:
            if task_id is not None:
                single(inspector, queue_name, task_id)
                click.echo(f"{verb} {task_id}")
            else:
                assert all_state is not None
                count = bulk(inspector, queue_name, all_state)
                click.echo(f"{verb} {count} {all_state} tasks in {queue_name}")

    return command


def _register(
    name: str,
    verb: str,
    help_text: str,
    single: Callable[[Inspector, str, str], None],
    bulk: Callable[[Inspector, str, str], int],
    example_state: str,
) -> None:
    command = _one_or_all(verb, single, bulk)
    command.__doc__ = help_text
    decorated = click.argument("queue_name", metavar="QUEUE")(
        click.argument("task_id", metavar="[ID]", required=False)(
            click.option(
                "--all",
                "all_state",
                is_flag=False,
                flag_value="",
                metavar="[STATE]",
                help="Act on every task in STATE (or in --state) instead of one task.",
            )(
                click.option(
                    "--state",
                    type=click.Choice(STATES),
                    help="The state --all acts on (--all --state STATE).",
                )(broker_option(command))
            )
        )
    )
    task.command(
        name,
        epilog=f"\b\nExamples:\n  conveyor task {name} default 5b0c...\n"
        f"  conveyor task {name} default --all {example_state}\n"
        f"  conveyor task {name} default --all --state {example_state}",
    )(decorated)


_register(
    "run",
    "ran",
    "Make a scheduled, retry or archived task pending now.",
    Inspector.run_task,
    Inspector.run_all_tasks,
    "archived",
)
_register(
    "archive",
    "archived",
    "Archive a pending, scheduled or retry task.",
    Inspector.archive_task,
    Inspector.archive_all_tasks,
    "retry",
)
_register(
    "delete",
    "deleted",
    "Delete a task that is not active.",
    Inspector.delete_task,
    Inspector.delete_all_tasks,
    "archived",
)
