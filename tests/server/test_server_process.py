"""``conveyor server`` as a real process: kill -9 with tasks in flight, SIGTERM, bind warnings."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import wait_until

pytestmark = pytest.mark.process


class ServerProcess:
    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_BROKER_URL"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "server", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def ready(self) -> dict[str, int]:
        def line() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError("server exited early:\n" + "".join(self.lines))
            return next((x for x in self.lines if "conveyor server ready" in x), None)

        found = wait_until(line, within=20.0)
        return {name: int(port) for name, port in re.findall(r"(\w+) [\d.]+:(\d+)", found)}

    def stop(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


class Conn:
    """A blocking masenko connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def call(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self.file.readline().decode()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def start(servers: list[ServerProcess], *args: str) -> dict[str, int]:
    server = ServerProcess(*args)
    servers.append(server)
    return server.ready()


def test_kill_9_loses_no_pushed_task_and_redelivers_fetched_ones(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    args = ("-b", f"sqlite:///{tmp_path / 'tasks.db'}", "--masenko", "127.0.0.1:0", "--lease", "1s")
    conn = Conn(start(servers, *args)["masenko"])
    for n in range(20):
        assert conn.call(f'PUSH {{"name":"t{n}"}}').startswith("OK ")
    fetched = {re.search(r'"name":"(t\d+)"', conn.call("FETCH")).group(1) for _ in range(5)}  # type: ignore[union-attr]
    assert len(fetched) == 5
    servers[0].stop(signal.SIGKILL)
    conn.close()

    conn = Conn(start(servers, *args)["masenko"])
    names: set[str] = set()
    deadline = time.monotonic() + 30
    while len(names) < 20 and time.monotonic() < deadline:
        reply = conn.call('FETCH {"timeout":"2s"}')
        if reply.startswith("OK "):
            names.add(re.search(r'"name":"(t\d+)"', reply).group(1))  # type: ignore[union-attr]
    assert names == {f"t{n}" for n in range(20)}
    conn.close()


def test_sigterm_gives_fetched_tasks_back_and_exits_cleanly(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    args = ("-b", f"sqlite:///{tmp_path / 'tasks.db'}", "--masenko", "127.0.0.1:0")
    conn = Conn(start(servers, *args)["masenko"])
    conn.call('PUSH {"name":"held"}')
    assert '"failures"' not in conn.call("FETCH")
    assert servers[0].stop(signal.SIGTERM) == 0
    conn.close()
    conn = Conn(start(servers, *args)["masenko"])
    reply = conn.call('FETCH {"timeout":"1s"}')
    assert reply.startswith('OK {"id":1,') and '"failures"' not in reply  # no failure counted
    conn.close()


def test_a_public_bind_warns(tmp_path: Path, servers: list[ServerProcess]) -> None:
    start(servers, "-b", f"sqlite:///{tmp_path / 't.db'}", "--masenko", "0.0.0.0:0")
    assert any("no authentication" in line for line in servers[0].lines)


class FaktoryConn:
    """A blocking Faktory connection, identified as worker ``wid``."""

    def __init__(self, port: int, wid: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"+HI ")
        assert self.call('HELLO {"v":2,"wid":"' + wid + '"}') == "+OK"

    def call(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        reply = self.file.readline().decode().rstrip("\r\n")
        if reply.startswith("$") and reply != "$-1":
            reply = self.file.readline().decode().rstrip("\r\n")
        return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_sigterm_tells_faktory_workers_to_terminate_then_exits_once_they_are_done(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    args = ("-b", f"sqlite:///{tmp_path / 'tasks.db'}", "--faktory", "127.0.0.1:0")
    worker = FaktoryConn(start(servers, *args, "--shutdown-grace", "60s")["faktory"], "w1")
    assert worker.call('PUSH {"jid":"j1","jobtype":"t","args":[]}') == "+OK"
    assert '"jid":"j1"' in worker.call("FETCH default")
    servers[0].proc.send_signal(signal.SIGTERM)
    wait_until(lambda: worker.call('BEAT {"wid":"w1"}') == '+{"state":"terminate"}', within=10)
    assert worker.call("FETCH default") == "$-1"
    assert servers[0].proc.poll() is None  # the job is still held: the grace goes on
    assert worker.call('ACK {"jid":"j1"}') == "+OK"
    assert servers[0].proc.wait(timeout=15) == 0  # told and holding nothing: done early
    worker.close()


def test_a_second_sigterm_cuts_the_grace_short(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    args = ("-b", f"sqlite:///{tmp_path / 'tasks.db'}", "--faktory", "127.0.0.1:0")
    worker = FaktoryConn(start(servers, *args, "--shutdown-grace", "60s")["faktory"], "w1")
    assert worker.call('PUSH {"jid":"j1","jobtype":"t","args":[]}') == "+OK"
    assert '"jid":"j1"' in worker.call("FETCH default")
    servers[0].proc.send_signal(signal.SIGTERM)
    wait_until(lambda: worker.call('BEAT {"wid":"w1"}') == '+{"state":"terminate"}', within=10)
    assert servers[0].proc.poll() is None  # j1 is held: the grace would run its 60 s
    servers[0].proc.send_signal(signal.SIGTERM)
    assert servers[0].proc.wait(timeout=15) == 0
    worker.close()
    worker = FaktoryConn(start(servers, *args)["faktory"], "w2")
    job = worker.call("FETCH default")
    assert '"jid":"j1"' in job and '"retry_count"' not in job  # given back, no failure counted
    worker.close()


def test_metrics_port_serves_the_server_metrics(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    args = ("-b", f"sqlite:///{tmp_path / 'tasks.db'}", "--masenko", "127.0.0.1:0")
    conn = Conn(start(servers, *args, "--metrics-port", "0")["masenko"])
    line = next(x for x in servers[0].lines if "metrics at http://" in x)
    url = re.findall(r"http://\S+/metrics", line)[0]
    assert conn.call('PUSH {"name":"t"}').startswith("OK ")
    with urllib.request.urlopen(url, timeout=10) as reply:
        page = reply.read().decode()
    assert 'conveyor_server_tasks_pushed_total{protocol="masenko"} 1.0' in page
    assert 'conveyor_server_connections{protocol="masenko"} 1.0' in page
    conn.close()
