"""Helpers for Redis-only tests: namespaced brokers, private Redis processes.

Private servers use free loopback ports and temp dirs; only processes started here are ever
signalled, by their own pid. (Helpers, not conftest fixtures: a second module named conftest
would shadow tests/conftest.py for the folders that import from it.)
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from conveyor.brokers.redis import RedisBroker
from support import wait_until

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_binaries(*names: str) -> None:
    """Skip locally, fail in CI (as tests/conftest.py's service_missing) unless all are on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        message = (
            f"{', '.join(missing)} unavailable: not found on PATH "
            "(Debian: apt-get install redis-server redis-sentinel)"
        )
        if IN_CI:
            pytest.fail(message + " (CI=true requires it)")
        pytest.skip(message)


def server_version(admin: redis.Redis) -> tuple[int, ...]:
    """The version of the server ``admin`` talks to, as numbers: (7, 0, 15)."""
    text = str(admin.info("server")["redis_version"])
    return tuple(int(part) for part in text.split("."))


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster: bool = False) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    A Cluster node also needs ``port + 10000`` (its bus port): both are picked below the kernel's
    ephemeral range (32768 and up), where outgoing connections cannot take them meanwhile.
    """
    if not cluster:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, 22700)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisProcess:
    """One redis-server (or redis-sentinel) we started; restartable on the same port and dir."""

    port: int
    workdir: Path
    args: list[str]
    sentinel: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> RedisProcess:
        exe = "redis-sentinel" if self.sentinel else "redis-server"
        command = [exe, *self.args]
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(command, cwd=self.workdir, stdout=log, stderr=log)
        log.close()
        try:
            wait_until(self.answers, within=10.0)
        except BaseException:
            self.kill()  # never leak a server that did not come up
            raise
        return self

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, **kwargs)  # type: ignore[arg-type]

    def answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis on port {self.port} exited: {log}")
        # A raw PING: any reply (+PONG, or -NOAUTH from a password-protected server) means up,
        # and no client library retries slow the check down.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64)[:1] in (b"+", b"-")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL our process and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Terminate our process (SIGTERM, then SIGKILL) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def server(workdir: Path, *extra: str, cluster: bool = False) -> RedisProcess:
    """A started redis-server on loopback with its data in ``workdir``.

    A free port can be taken by another process before the server binds it (tests run in
    parallel): then it starts again on another port.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if cluster:
        extra = (*extra, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    for attempt in range(5):
        port = free_port(cluster=cluster)
        args = [
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--daemonize",
            "no",
            *extra,
        ]
        try:
            return RedisProcess(port=port, workdir=workdir, args=args).start()
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == 4:
                raise
            (workdir / "nodes.conf").unlink(missing_ok=True)  # a cluster node's id, made at start
    raise AssertionError("unreachable")


def sentinel(
    workdir: Path,
    master_port: int,
    *,
    quorum: int = 2,
    extra_conf: str = "",
    master_conf: str = "",
) -> RedisProcess:
    """A started redis-sentinel watching the primary at ``master_port`` as ``mymaster``.

    ``extra_conf``: more sentinel.conf lines (such as TLS settings), before the monitor line;
    ``master_conf``: lines after it (``sentinel auth-pass mymaster ...``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n{extra_conf}"
        f"sentinel monitor mymaster 127.0.0.1 {master_port} {quorum}\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
        "sentinel failover-timeout mymaster 5000\n"
        "sentinel parallel-syncs mymaster 1\n"
        f"{master_conf}"
    )
    return RedisProcess(port=port, workdir=workdir, args=[str(conf)], sentinel=True).start()


class Fleet:
    """Every process a test started; stopped together when the ``with`` block ends.

    Skips (locally) or fails (CI) at entry when redis-server is missing.
    """

    def __init__(self) -> None:
        self.processes: list[RedisProcess] = []

    def __enter__(self) -> Fleet:
        need_binaries("redis-server")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def add(self, process: RedisProcess) -> RedisProcess:
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()


def start_cluster(fleet: Fleet, workdir: Path, nodes: int = 3) -> list[str]:
    """A local Redis Cluster of ``nodes`` primaries (no replicas), up and ``cluster_state:ok``;
    returns the nodes' ``host:port`` addresses."""
    need_binaries("redis-cli")
    members = [
        fleet.add(server(workdir / f"n{i}", "--cluster-node-timeout", "2000", cluster=True))
        for i in range(nodes)
    ]
    addresses = [f"127.0.0.1:{n.port}" for n in members]
    create = ["--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
    subprocess.run(["redis-cli", *create], check=True, capture_output=True, timeout=30)

    wait_for_cluster(members)
    return addresses


def wait_for_cluster(nodes: list[RedisProcess]) -> None:
    """Until every node reports ``cluster_state:ok`` (asked on its plain port)."""

    def cluster_ok() -> bool:
        for node in nodes:
            with node.client() as c:
                if c.execute_command("CLUSTER", "INFO").find(b"cluster_state:ok") < 0:
                    return False
        return True

    wait_until(cluster_ok, within=15)


async def drop_namespace(url: str, namespace: str) -> None:
    """Delete only this test's keys (its namespace); never FLUSHDB."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.unlink(*keys[start : start + 500])
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def namespaced_broker(url: str) -> AsyncIterator[RedisBroker]:
    """A RedisBroker on ``url`` with a namespace of its own, whose keys are deleted afterwards."""
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    broker = RedisBroker.from_url(f"{url}?namespace={namespace}")
    try:
        yield broker
    finally:
        await broker.close()
        await drop_namespace(url, namespace)
