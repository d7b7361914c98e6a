"""The command line: click's CliRunner for each command, a real subprocess for the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor import Inspector, Server, TaskState
from conveyor.cli.main import cli
from conveyor.cli.params import parse_duration
from conveyor.worker.config import WorkerConfig


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.mark.parametrize(
    "command", [[], ["worker"], ["enqueue"], ["demo"], ["redis-acl"], ["check"]]
)
def test_every_command_has_examples_in_its_help(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_enqueue_prints_the_task_info(runner: CliRunner, url: str) -> None:
    result = runner.invoke(
        cli, ["enqueue", "email:welcome", '{"user_id": 42}', "-q", "emails", "--broker", url]
    )
    assert result.exit_code == 0, result.output
    assert "state:           pending" in result.output
    task_id = result.output.split()[1]
    with Inspector(url) as inspector:
        task = inspector.get_task("emails", task_id)
    assert (task.type, task.payload) == ("email:welcome", {"user_id": 42})


def test_enqueue_options(runner: CliRunner, url: str) -> None:
    later = runner.invoke(cli, ["enqueue", "a.b", "--in", "10m", "--broker", url])
    at = runner.invoke(
        cli,
        ["enqueue", "a.b", "--at", "2099-01-01T00:00:00", "--id", "fixed", "--broker", url],
    )
    retry = runner.invoke(
        cli, ["enqueue", "a.b", "[1]", "--max-retry", "2", "--timeout", "90s", "--broker", url]
    )
    assert later.exit_code == at.exit_code == retry.exit_code == 0
    assert "scheduled" in later.output
    with Inspector(url) as inspector:
        fixed = inspector.get_task("default", "fixed")
        assert fixed.state is TaskState.SCHEDULED
        assert fixed.next_process_at is not None and fixed.next_process_at.year == 2099
        retry_id = retry.output.split()[1]
        task = inspector.get_task("default", retry_id)
        assert (task.max_retry, task.timeout) == (2, timedelta(seconds=90))


def test_enqueue_reads_the_broker_url_from_the_environment(
    runner: CliRunner, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_BROKER_URL", url)
    result = runner.invoke(cli, ["enqueue", "a.b"])
    assert result.exit_code == 0, result.output
    with Inspector(url) as inspector:
        assert inspector.queue_info("default").pending == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a.b", "{not json"], "not valid JSON"),
        (["a.b", "--in", "soon"], "is not a duration"),
        (["a.b", "--at", "tomorrow"], "ISO 8601"),
        (["a.b", "--in", "1s", "--at", "2030-01-01T00:00:00"], "either --in or --at"),
        (["bad type!"], "invalid task type"),
        (["a.b", "-q", "bad queue"], "invalid queue name"),
    ],
)
def test_enqueue_bad_input_is_a_clear_error(
    runner: CliRunner, url: str, args: list[str], message: str
) -> None:
    result = runner.invoke(cli, ["enqueue", *args, "--broker", url])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_broker_url_hides_the_password(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["enqueue", "a.b", "--broker", "ftp://me:s3cret@host/"])
    assert result.exit_code == 1
    assert "unsupported broker URL" in result.output
    assert "s3cret" not in result.output


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "module:attribute"),
        ("surely_missing_module_xyz:app", "cannot import"),
        ("conveyor:nothing_here", "has no attribute"),
        ("conveyor:__doc__", "not an App"),
    ],
)
def test_worker_bad_target(runner: CliRunner, target: str, message: str) -> None:
    result = runner.invoke(cli, ["worker", target])
    assert result.exit_code == 2
    assert message in result.output


def test_worker_bad_queue_weight(runner: CliRunner, url: str) -> None:
    result = runner.invoke(cli, ["worker", "conveyor:ServeMux", "-q", "a=x", "--broker", url])
    assert result.exit_code == 2
    assert "positive integer" in result.output


def test_worker_recovery_options_reach_the_server(
    runner: CliRunner, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[WorkerConfig] = []
    # Serving is tested elsewhere: here only what the options turn into.
    monkeypatch.setattr(Server, "run", lambda self, handler, *, loop: seen.append(self.config))
    result = runner.invoke(
        cli,
        [
            "worker", "conveyor:ServeMux", "--broker", url, "--recover-interval", "300ms",
            "--recover-delay", "250ms", "--max-crash-attempts", "5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [config] = seen
    assert (config.recover_interval_s, config.recover_delay_s) == (0.3, 0.25)
    assert config.max_crash_attempts == 5
    assert config.sync_cancel_grace_s == 1.0  # the default


def test_worker_sync_cancel_grace_reaches_the_server(
    runner: CliRunner, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[WorkerConfig] = []
    monkeypatch.setattr(Server, "run", lambda self, handler, *, loop: seen.append(self.config))
    args = ["worker", "conveyor:ServeMux", "--broker", url, "--sync-cancel-grace"]
    result = runner.invoke(cli, [*args, "2500ms"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*args, "0"])
    assert result.exit_code == 0, result.output
    assert [config.sync_cancel_grace_s for config in seen] == [2.5, 0.0]
    refused = runner.invoke(cli, [*args[:-1], "--sync-cancel-grace=-1s"])
    assert refused.exit_code == 2
    assert "duration" in refused.output


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("2.5", 2.5), ("1d", 86400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5x", "m5", "-3", "10s5", "nan"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "conveyor" in result.output


@pytest.mark.process
def test_demo_runs_to_completion_in_a_real_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_BROKER_URL"}
    # Both streams into one pipe, as `conveyor demo > out.txt 2>&1` does: no terminal.
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--tasks", "60"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    # The summary starts a line of its own, after the progress display's last line.
    summary = [line for line in lines if "demo finished" in line]
    assert len(summary) == 1
    assert summary[0].startswith("demo finished: 59 tasks done, 1 retried, 1 archived")
    assert result.stdout.endswith("\n")
    assert "Next steps:" in lines
    assert any("conveyor worker tasks:app" in line for line in lines)
    assert any("conveyor queue ls" in line for line in lines)
    assert "Traceback" not in result.stdout
    assert list(tmp_path.iterdir()) == []  # its database lived in a temp dir, now removed


@pytest.mark.parametrize(
    "command",
    [
        ["queue"],
        ["queue", "ls"],
        ["queue", "pause"],
        ["queue", "limit"],
        ["queue", "concurrency"],
        ["task"],
        ["task", "ls"],
        ["task", "run"],
    ],
)
def test_inspect_commands_have_examples(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_queue_and_task_commands(runner: CliRunner, url: str) -> None:
    from conveyor import Client, Task

    with Client(url) as client:
        waiting = client.enqueue(Task("a.b", 1))
        later = client.enqueue_in(3600, Task("a.b", 2), queue="low")

    listing = runner.invoke(cli, ["queue", "ls", "-b", url])
    assert listing.exit_code == 0
    assert [line.split()[:3] for line in listing.output.splitlines()[1:]] == [
        ["default", "1", "0"],
        ["low", "0", "1"],
    ]
    scheduled = runner.invoke(cli, ["task", "ls", "low", "--state", "scheduled", "-b", url])
    assert later.id in scheduled.output
    assert runner.invoke(cli, ["task", "archive", "default", waiting.id, "-b", url]).exit_code == 0
    ran = runner.invoke(cli, ["task", "run", "default", "--all", "archived", "-b", url])
    assert "ran 1 archived tasks in default" in ran.output
    shown = runner.invoke(cli, ["task", "show", "default", waiting.id, "-b", url])
    assert "state:           pending" in shown.output
    assert runner.invoke(cli, ["queue", "pause", "low", "-b", url]).exit_code == 0
    assert runner.invoke(cli, ["task", "delete", "low", later.id, "-b", url]).exit_code == 0
    with Inspector(url) as inspector:
        assert inspector.queue_info("low").paused
        assert inspector.queue_info("low").size == 0
        assert inspector.get_task("default", waiting.id).state is TaskState.PENDING


def test_queue_limit_sets_shows_and_removes_a_limit(runner: CliRunner, url: str) -> None:
    from conveyor import Client, Task

    with Client(url) as client:
        client.enqueue(Task("a.b", 1), queue="mail")

    limited = runner.invoke(
        cli, ["queue", "limit", "mail", "5", "--overflow", "drop-oldest", "-b", url]
    )
    assert limited.exit_code == 0, limited.output
    listing = runner.invoke(cli, ["queue", "ls", "-b", url])
    assert listing.output.splitlines()[0].split()[-2:] == ["paused", "limit"]
    assert listing.output.splitlines()[1].split()[-3:] == ["no", "5", "(drop-oldest)"]
    with Inspector(url) as inspector:
        limit = inspector.queue_limit("mail")
        assert limit is not None and limit.overflow == "drop_oldest"

    assert runner.invoke(cli, ["queue", "limit", "mail", "none", "-b", url]).exit_code == 0
    listing = runner.invoke(cli, ["queue", "ls", "-b", url])
    assert listing.output.splitlines()[1].split()[-1] == "-"
    bad = runner.invoke(cli, ["queue", "limit", "mail", "lots", "-b", url])
    assert bad.exit_code != 0 and "'lots'" in bad.output


def test_queue_concurrency_sets_and_removes_a_limit(runner: CliRunner, url: str) -> None:
    assert runner.invoke(cli, ["queue", "concurrency", "mail", "3", "-b", url]).exit_code == 0
    with Inspector(url) as inspector:
        assert inspector.queue_concurrency("mail") == 3
    assert runner.invoke(cli, ["queue", "concurrency", "mail", "none", "-b", url]).exit_code == 0
    with Inspector(url) as inspector:
        assert inspector.queue_concurrency("mail") is None
    assert runner.invoke(cli, ["queue", "concurrency", "mail", "0", "-b", url]).exit_code != 0


def test_task_commands_bad_input(runner: CliRunner, url: str) -> None:
    missing = runner.invoke(cli, ["task", "show", "default", "nope", "-b", url])
    assert missing.exit_code == 1
    assert "no task 'nope'" in missing.output
    neither = runner.invoke(cli, ["task", "run", "default", "-b", url])
    assert neither.exit_code == 2
    assert "either a task ID or --all" in neither.output
    assert "Traceback" not in missing.output + neither.output


def test_worker_broker_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor import App, ServeMux
    from conveyor.cli.worker import resolve

    app = App("sqlite:///from-app.db")
    monkeypatch.delenv("CONVEYOR_BROKER_URL", raising=False)
    handler, broker = resolve(app, None)
    assert handler is app.mux
    assert broker == "sqlite:///from-app.db"
    monkeypatch.setenv("CONVEYOR_BROKER_URL", "memory://from-env")
    assert resolve(app, None)[1] == "memory://from-env"
    assert resolve(app, "memory://from-flag")[1] == "memory://from-flag"
    mux = ServeMux()
    assert resolve(mux, None) == (mux, "memory://from-env")


def test_client_and_inspector_from_env(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    from conveyor import Client, Task

    monkeypatch.setenv("CONVEYOR_BROKER_URL", url)
    with Client.from_env(queue="env") as client:
        client.enqueue(Task("a.b"))
    with Inspector.from_env() as inspector:
        assert inspector.queue_info("env").pending == 1
