"""``conveyor check``: the broker's backend, location, durability and warnings, on real brokers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis_servers import Fleet, free_port, server

from conveyor.cli.main import cli

SECRET = "check-secret-pw"


def test_a_sqlite_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["check", "-b", f"sqlite:///{tmp_path / 'c.db'}"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"broker:     sqlite at {tmp_path / 'c.db'}"
    assert lines[1].startswith("durability: SQLite WAL, synchronous=NORMAL")
    assert lines[2:] == ["no warnings"]


@pytest.mark.redis
def test_a_redis_server_names_its_version(redis_url: str) -> None:
    result = CliRunner().invoke(cli, ["check", "--broker", f"{redis_url}?namespace=checked"])
    assert result.exit_code == 0, result.output
    assert re.search(
        r"^broker: +redis at .*\(namespace 'checked', Redis \d+\.\d+\.\d+\)$",
        result.output,
        re.MULTILINE,
    ), result.output
    assert "durability: " in result.output


@pytest.mark.redis
def test_warnings_are_printed_and_can_fail_the_check(tmp_path: Path) -> None:
    with Fleet() as fleet:
        lru = fleet.add(server(tmp_path / "lru", "--maxmemory-policy", "allkeys-lru"))
        args = ["check", "-b", f"redis://127.0.0.1:{lru.port}/0"]
        # A real process: pytest's own log handlers would hide a second print of the warning.
        command = [sys.executable, "-m", "conveyor", *args]
        lenient = subprocess.run(command, capture_output=True, text=True, timeout=60)
        strict = CliRunner().invoke(cli, [*args, "--fail-on-warning"])
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    lines = lenient.stdout.splitlines()
    [warning] = [line for line in lines if line.startswith("warning:")]
    assert "allkeys-lru" in warning and "noeviction" in warning
    # Printed once: the broker's own log line of it is not repeated on stderr.
    assert lenient.stderr == ""
    assert strict.exit_code == 1 and "1 warning(s)" in strict.output


@pytest.mark.redis
def test_an_unreachable_broker_fails_without_showing_the_password() -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(cli, ["check", "-b", url])
    assert result.exit_code == 1
    assert "is unavailable" in result.output and SECRET not in result.output
