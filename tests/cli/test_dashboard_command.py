"""``conveyor dashboard``: its options, its warning, and a real server process answering."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor.cli.dashboard import is_loopback
from conveyor.cli.main import cli
from support import wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def _wait_serving(process: subprocess.Popen[str], url: str, status: int) -> None:
    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError("dashboard exited early")
        try:
            return _get(url) == status
        except OSError:  # not listening yet
            return False

    wait_until(answers, within=20.0, interval=0.05)


def test_help_has_examples_and_every_option() -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--help"])
    assert result.exit_code == 0
    for option in ("--broker", "--host", "--port", "--read-only", "--basic-auth", "--prefix"):
        assert option in result.output
    assert "Examples:" in result.output and "CONVEYOR_DASHBOARD_AUTH" in result.output


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# A wrong setting must stop the command before it serves (the test would hang otherwise).
@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "args", [["--basic-auth", "no-colon"], ["--prefix", "no-slash"], ["-b", "nope://x"]]
)
def test_bad_settings_are_one_line_and_exit_1(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dashboard", "-b", f"sqlite:///{tmp_path / 'd.db'}", *args])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "Traceback" not in result.output


@pytest.mark.process
def test_the_command_serves_under_its_prefix_with_auth_from_the_environment(
    tmp_path: Path,
) -> None:
    port = _free_port()
    env = {**os.environ, "CONVEYOR_DASHBOARD_AUTH": "ops:pw"}
    command = [
        sys.executable,
        "-m",
        "conveyor",
        "dashboard",
        "-b",
        f"sqlite:///{tmp_path / 'd.db'}",
    ]
    command += ["--host", "0.0.0.0", "--port", str(port), "--prefix", "/ops"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}/ops"
        _wait_serving(process, base + "/api/queues", 401)
        assert _get(base + "/api/queues", "ops:pw") == 200
        assert _get(base + "/", "ops:pw") == 200
        assert _get(f"http://127.0.0.1:{port}/api/queues", "ops:pw") == 404
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    # Auth is set, so no warning about an open dashboard; the address is printed.
    assert "warning" not in stderr and f":{port}/ops/" in stderr


@pytest.mark.process
def test_listening_beyond_loopback_without_auth_warns(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_DASHBOARD_AUTH"}
    command = [
        sys.executable,
        "-m",
        "conveyor",
        "dashboard",
        "-b",
        f"sqlite:///{tmp_path / 'd.db'}",
    ]
    command += ["--host", "0.0.0.0", "--port", str(port), "--read-only"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_serving(process, f"http://127.0.0.1:{port}/", 200)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "warning: the dashboard listens on 0.0.0.0 without authentication" in stderr


@pytest.mark.process
def test_on_loopback_without_auth_only_loopback_host_names_are_answered(tmp_path: Path) -> None:
    # A DNS name rebound to 127.0.0.1 arrives with its own Host header: refused.
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_DASHBOARD_AUTH"}
    url = f"sqlite:///{tmp_path / 'd.db'}"
    command = [sys.executable, "-m", "conveyor", "dashboard", "-b", url, "--port", str(port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_serving(process, f"http://127.0.0.1:{port}/api/queues", 200)
        assert _get(f"http://localhost:{port}/api/queues") == 200
        rebound = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/queues", headers={"Host": f"evil.example:{port}"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=5)
        assert refused.value.code == 400
        refused.value.close()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "warning" not in stderr
