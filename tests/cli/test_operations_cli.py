"""conveyor stats, workers, task cancel, --json listings, bulk --all --state, one-line errors."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor import Client, Inspector, Server, Task, TaskContext, TaskState
from conveyor.cli import operations
from conveyor.cli.main import cli
from support import wait_until


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def running(url: str) -> Iterator[tuple[Server, threading.Event]]:
    """A worker on ``url`` whose ``block`` tasks run until cancelled; and their start event."""
    started = threading.Event()

    def handler(ctx: TaskContext, task: Task) -> None:
        if task.type == "block":
            started.set()
            ctx.cancel_event.wait(30)

    server = Server(url, concurrency=2, queues={"default": 3, "low": 1}, lease=3.0)
    server.start(handler)
    try:
        yield server, started
    finally:
        server.stop()


@pytest.mark.parametrize("command", [["stats"], ["workers"], ["task", "cancel"]])
def test_new_commands_have_examples(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_workers_and_stats_show_a_live_worker(
    runner: CliRunner, url: str, running: tuple[Server, threading.Event]
) -> None:
    server, _ = running
    with Client(url) as client:
        client.enqueue(Task("later", None), queue="low", process_in=3600)

    listed = runner.invoke(cli, ["workers", "--json", "-b", url])
    assert listed.exit_code == 0, listed.output
    [worker] = json.loads(listed.output)
    assert (worker["id"], worker["pid"], worker["queues"]) == (
        server.worker_id,
        os.getpid(),
        {"default": 3, "low": 1},
    )
    table = runner.invoke(cli, ["workers", "-b", url])
    assert server.worker_id in table.output

    once = runner.invoke(cli, ["stats", "--json", "--interval", "0.1", "-b", url])
    assert once.exit_code == 0, once.output
    report = json.loads(once.output)
    assert report["workers"] == 1
    [low] = [q for q in report["queues"] if q["queue"] == "low"]
    assert (low["scheduled"], low["pending"], low["oldest_pending_s"]) == (1, 0, 0)
    text = runner.invoke(cli, ["stats", "--interval", "0.1", "-b", url])
    assert text.exit_code == 0
    assert "1 worker(s) alive" in text.output
    assert "low" in text.output


def test_stats_watch_refreshes_until_interrupted(
    runner: CliRunner, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client(url) as client:
        client.enqueue(Task("a.b", None))
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(operations.time, "sleep", sleep)
    result = runner.invoke(cli, ["stats", "--watch", "--interval", "0.5", "-b", url])
    assert result.exit_code == 0, result.output
    assert sleeps == [0.5, 0.5, 0.5]
    assert "default" in result.output


def test_task_cancel_stops_a_running_task(
    runner: CliRunner, url: str, running: tuple[Server, threading.Event]
) -> None:
    _, started = running
    with Client(url) as client:
        info = client.enqueue(Task("block", None), max_retry=5)
    assert started.wait(10)

    result = runner.invoke(cli, ["task", "cancel", "default", info.id, "-b", url])

    assert result.exit_code == 0, result.output
    with Inspector(url) as inspector:
        done = wait_until(
            lambda: (t := inspector.get_task("default", info.id)).state is TaskState.ARCHIVED and t,
            within=10,
        )
    assert done.last_error == "cancelled"
    again = runner.invoke(cli, ["task", "cancel", "default", info.id, "-b", url])
    missing = runner.invoke(cli, ["task", "cancel", "default", "nope", "-b", url])
    assert (again.exit_code, missing.exit_code) == (1, 1)
    assert "is not active (it is archived)" in again.output
    assert "no task 'nope'" in missing.output
    assert len((again.output + missing.output).splitlines()) == 2  # one line each


def test_json_listings_and_bulk_all_state(runner: CliRunner, url: str) -> None:
    with Client(url) as client:
        first = client.enqueue(Task("a.b", 1))
        client.enqueue(Task("a.b", 2))

    queues = json.loads(runner.invoke(cli, ["queue", "ls", "--json", "-b", url]).output)
    assert [(q["queue"], q["pending"]) for q in queues] == [("default", 2)]
    tasks = json.loads(runner.invoke(cli, ["task", "ls", "default", "--json", "-b", url]).output)
    assert [t["state"] for t in tasks] == ["pending", "pending"]
    shown = runner.invoke(cli, ["task", "show", "default", first.id, "--json", "-b", url])
    assert json.loads(shown.output)["payload_bytes"] == 1

    archived = runner.invoke(
        cli, ["task", "archive", "default", "--all", "--state", "pending", "-b", url]
    )
    assert "archived 2 pending tasks in default" in archived.output
    ran = runner.invoke(cli, ["task", "run", "default", "--state", "archived", "--all", "-b", url])
    assert "ran 2 archived tasks in default" in ran.output
    clash = runner.invoke(cli, ["task", "run", "default", "--all", "retry", "--state", "archived"])
    bare = runner.invoke(cli, ["task", "run", "default", "--all", "-b", url])
    assert (clash.exit_code, bare.exit_code) == (2, 2)
    assert "disagree" in clash.output
    assert "--all needs a state" in bare.output


def test_unreachable_broker_and_bad_url_are_one_line(runner: CliRunner, tmp_path: Path) -> None:
    unreachable = f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}"
    commands = (
        ["queue", "ls"],
        ["stats"],
        ["workers"],
        ["task", "ls", "default"],
        ["enqueue", "a"],
    )
    for command in commands:
        for broker in (unreachable, "bogus://host"):
            result = runner.invoke(cli, [*command, "-b", broker])
            assert result.exit_code == 1, (command, broker, result.output)
            assert result.output.startswith("Error: ")
            assert len(result.output.splitlines()) == 1
            assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["queue", "ls"], ["enqueue", "a"], ["workers"]])
def test_debug_shows_the_error_itself(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(cli, ["--debug", *command, "-b", "bogus://host"])
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "ConfigError"


def test_stats_rate_ignores_the_midnight_reset() -> None:
    assert operations._rate(5, 10, 1.0) == 0
    assert operations._rate(12, 10, 0.5) == 4


def test_worker_metrics_port_in_use_is_one_line(runner: CliRunner, url: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            cli, ["worker", "conveyor.cli.main:main", "-b", url, "--metrics-port", str(port)]
        )
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert len(result.output.splitlines()) == 1
