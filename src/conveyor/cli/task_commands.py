"""``conveyor task ...``: list, show, re-run, archive or delete tasks, one or a state's all."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from conveyor.cli.enqueue import format_info
from conveyor.cli.inspect_commands import (
    STATES,
    broker_option,
    echo_json,
    inspector_for,
    json_option,
)
from conveyor.inspector import Inspector
from conveyor.message import AttemptRecord, TaskInfo


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
