"""``conveyor schedule ls|pause|unpause|rm`` and ``conveyor scheduler`` (a real process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor import Inspector, TaskState
from conveyor.cli.main import cli
from support import wait_until


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.mark.parametrize(
    "command", [["schedule"], ["schedule", "ls"], ["schedule", "pause"], ["scheduler"]]
)
def test_schedule_commands_have_examples_in_their_help(
    runner: CliRunner, command: list[str]
) -> None:
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_ls_pause_unpause_rm(runner: CliRunner, url: str) -> None:
    assert runner.invoke(cli, ["schedule", "ls", "-b", url]).output == "no schedules\n"
    with Inspector(url) as inspector:
        inspector.add_schedule("nightly", "report.nightly", cron="30 2 * * *", tz="Europe/Paris")
        inspector.add_schedule("tick", "job.tick", every=90)

    table = runner.invoke(cli, ["schedule", "ls", "-b", url])
    paused = runner.invoke(cli, ["schedule", "pause", "tick", "-b", url])
    as_json = runner.invoke(cli, ["schedule", "ls", "--json", "-b", url])
    unpaused = runner.invoke(cli, ["schedule", "unpause", "tick", "-b", url])
    removed = runner.invoke(cli, ["schedule", "rm", "nightly", "-b", url])

    assert table.exit_code == 0, table.output
    header, first, second = table.output.splitlines()
    assert header.split() == [
        "name", "target", "when", "tz", "next", "fire", "last", "fire", "status"
    ]  # fmt: skip
    assert first.split()[:6] == ["nightly", "task", "30", "2", "*", "*"]
    assert second.split()[:5] == ["tick", "task", "every", "90s", "UTC"]
    assert (paused.output, unpaused.output, removed.output) == (
        "paused tick\n",
        "unpaused tick\n",
        "removed nightly\n",
    )
    entries = json.loads(as_json.output)
    assert [(e["name"], e["paused"], e["every_s"], e["owner"], e["target"]) for e in entries] == [
        ("nightly", False, None, None, "task"),
        ("tick", True, 90.0, None, "task"),
    ]
    with Inspector(url) as inspector:
        assert [s.name for s in inspector.list_schedules()] == ["tick"]


@pytest.mark.parametrize("verb", ["pause", "unpause", "rm"])
def test_unknown_names_exit_1_with_one_line(runner: CliRunner, url: str, verb: str) -> None:
    result = runner.invoke(cli, ["schedule", verb, "ghost", "-b", url])

    assert result.exit_code == 1
    assert result.output == "Error: no schedule named 'ghost'\n"


@pytest.mark.process
def test_the_scheduler_command_fires_and_stops_on_sigterm(tmp_path: Path, url: str) -> None:
    (tmp_path / "sched_cli_app.py").write_text(
        textwrap.dedent(
            """
            from conveyor import App
            app = App("memory://")

            @app.periodic(every=1, name="cli.tick")
            def tick() -> None: ...
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "scheduler", "sched_cli_app:app", "-b", url],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Inspector(url) as inspector:
            wait_until(
                lambda: len(inspector.list_tasks("default", TaskState.PENDING)) >= 2, within=20
            )
            [entry] = inspector.list_schedules()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert (entry.name, entry.owner) == ("cli.tick", "app")
    assert "schedule cli.tick fired for" in err and "scheduler stopped" in err


def test_worker_scheduler_flag_needs_an_app(
    runner: CliRunner, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plain_handler.py").write_text("def handle(ctx, task):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    result = runner.invoke(cli, ["worker", "plain_handler:handle", "--scheduler", "-b", url])

    assert result.exit_code == 2
    assert "--scheduler needs an App" in result.output
