"""The broker over TLS (``rediss://``, ``rediss+sentinel://``, ``rediss+cluster://``) and a unix
socket (``unix://``), on real servers.

URL parsing is covered in test_redis_connect.py; here private redis-servers listen on a TLS port
(with certificates made by ``openssl`` for the test) or on a unix socket, and the broker does
its whole round on them: async and sync enqueue, the idle wait woken by an enqueue, claim,
complete, and a worker running a task. Each server also listens on plain loopback TCP, which
the test uses only to see it is up.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError
from redis_servers import (
    Fleet,
    RedisProcess,
    free_port,
    need_binaries,
    sentinel,
    server,
    server_version,
    start_cluster,
    wait_for_cluster,
)
from tls import Certs, make_certs, tls_options, tls_settings

from conveyor import Client, Task
from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.acl import CLUSTER_COMMANDS, acl_rules, acl_setuser_line
from conveyor.errors import BrokerError, BrokerUnavailableError
from conveyor.message import Completion, TaskMessage, new_task_id
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from support import eventually
from worker.harness import fast, serving

pytestmark = pytest.mark.redis

SECRET = "pw-transport-4711"
PROMPT_S = 5.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_port(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A password-protected redis-server taking TLS clients with or without a certificate."""
    port = free_port()
    with Fleet() as fleet:
        options = tls_options(certs, port, auth_clients="optional")
        fleet.add(server(tmp_path_factory.mktemp("tls"), "--requirepass", SECRET, *options))
        yield port


@pytest.fixture(scope="module")
def mtls_port(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server whose TLS port requires a client certificate signed by the test CA."""
    port = free_port()
    with Fleet() as fleet:
        fleet.add(server(tmp_path_factory.mktemp("mtls"), *tls_options(certs, port, "yes")))
        yield port


@pytest.fixture(scope="module")
def unix_socket() -> Iterator[Path]:
    """A password-protected redis-server on a unix socket (a short path: the limit is ~100)."""
    with tempfile.TemporaryDirectory(prefix="cv-") as short, Fleet() as fleet:
        path = Path(short) / "redis.sock"
        socket_options = ("--unixsocket", str(path), "--unixsocketperm", "700")
        fleet.add(server(Path(short) / "data", "--requirepass", SECRET, *socket_options))
        yield path


@pytest.fixture(scope="module")
def tls_sentinel(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A TLS primary and a Sentinel watching it over TLS; the Sentinel's TLS port."""
    primary_port, sentinel_port = free_port(), free_port()
    workdir = tmp_path_factory.mktemp("tls-sentinel")
    with Fleet() as fleet:
        need_binaries("redis-sentinel")
        fleet.add(server(workdir / "primary", *tls_options(certs, primary_port, "optional")))
        settings = {**tls_settings(certs, sentinel_port, "optional"), "tls-replication": "yes"}
        conf = "".join(f"{name} {value}\n" for name, value in settings.items())
        fleet.add(sentinel(workdir / "sentinel", primary_port, quorum=1, extra_conf=conf))
        yield sentinel_port


@pytest.fixture(scope="module")
def tls_cluster(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A 3-node Redis Cluster whose clients and bus use TLS; one node's TLS port."""
    need_binaries("redis-cli")
    workdir = tmp_path_factory.mktemp("tls-cluster")
    with Fleet() as fleet:
        ports = [free_port(cluster=True) for _ in range(3)]  # the bus is TLS port + 10000
        cluster_tls = ("--tls-cluster", "yes", "--cluster-node-timeout", "2000")
        nodes = [
            fleet.add(
                server(
                    workdir / f"n{i}",
                    *tls_options(certs, port, "optional"),
                    *cluster_tls,
                    cluster=True,
                )
            )
            for i, port in enumerate(ports)
        ]
        create = ["--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        tls = ["--tls", "--cacert", str(certs.ca)]
        subprocess.run(["redis-cli", *tls, *create], check=True, capture_output=True, timeout=30)
        wait_for_cluster(nodes)
        yield ports[0]


def _message(queue: str) -> TaskMessage:
    return TaskMessage(id=str(new_task_id()), type="t", queue=queue, payload=b'{"n":1}')


async def _full_round(url: str) -> None:
    """Sync and async enqueue, an idle wait woken by an enqueue, claim, complete, a worker."""
    broker = RedisBroker.from_url(url)
    try:
        # The synchronous client path (its own connection, the direct call on it).
        with Client(broker) as client:
            first = client.enqueue(Task("t", {"n": 1}), queue="q")
        [lease] = await broker.claim(["q"], limit=1, lease_s=30)
        assert lease.task.id == first.id and lease.task.payload == {"n": 1}
        assert await broker.complete([Completion(lease=lease, result=b'"done"')]) == [True]

        # The idle wait (the blocking connection) ends when a task arrives.
        waiting = asyncio.create_task(broker.wait_for_tasks(["q"], timeout_s=30))
        await asyncio.sleep(0)  # let the wait reach its BLPOP before the enqueue
        second = _message("q")
        await broker.enqueue([second])
        await asyncio.wait_for(waiting, PROMPT_S)
        [lease] = await broker.claim(["q"], limit=1, lease_s=30)
        assert lease.task.id == second.id
        assert await broker.complete([Completion(lease=lease)]) == [True]

        # A worker runs a task end to end.
        seen: list[object] = []

        async def handler(ctx: TaskContext, task: Task) -> str:
            seen.append(task.payload)
            return "ok"

        async def all_done() -> bool:
            stats = await broker.queue_stats("q")
            return (stats.pending, stats.active, stats.processed_today) == (0, 0, 3)

        async with serving(Server(broker, queues=["q"], **fast()), handler):
            await broker.enqueue([_message("q")])
            await eventually(all_done, within=PROMPT_S)
        assert seen == [{"n": 1}]
    finally:
        await broker.close()


async def test_tls_with_the_servers_ca_verified(tls_port: int, certs: Certs) -> None:
    await _full_round(
        f"rediss://:{SECRET}@127.0.0.1:{tls_port}/0?namespace=tls&ssl_ca_certs={certs.ca}"
    )


async def test_tls_without_verification(tls_port: int) -> None:
    await _full_round(f"rediss://:{SECRET}@127.0.0.1:{tls_port}/1?ssl_cert_reqs=none")


async def test_tls_with_a_client_certificate(mtls_port: int, certs: Certs) -> None:
    await _full_round(
        f"rediss://127.0.0.1:{mtls_port}/0?ssl_ca_certs={certs.ca}"
        f"&ssl_certfile={certs.client_cert}&ssl_keyfile={certs.client_key}"
    )


async def test_tls_sentinel(tls_sentinel: int, certs: Certs) -> None:
    await _full_round(
        f"rediss+sentinel://127.0.0.1:{tls_sentinel}/mymaster/0?ssl_ca_certs={certs.ca}"
    )


@pytest.mark.parametrize("verify", ["ssl_ca_certs={ca}", "ssl_cert_reqs=none"])
async def test_tls_cluster(tls_cluster: int, certs: Certs, verify: str) -> None:
    query = verify.format(ca=certs.ca)
    await _full_round(f"rediss+cluster://127.0.0.1:{tls_cluster}?namespace=c{len(query)}&{query}")


async def _refused(url: str, kind: type[BrokerError] = BrokerUnavailableError) -> BrokerError:
    """The error of exactly ``kind`` an enqueue to ``url`` raises (tried once, no backoff)."""
    broker = RedisBroker.from_url(url)
    broker._client.get_retry().update_retries(0)  # type: ignore[union-attr]  # final; no backoff
    try:
        with pytest.raises(kind) as info:
            await broker.enqueue([_message("q")])
    finally:
        await broker.close()
    assert type(info.value) is kind, info.value
    return info.value


async def test_an_untrusted_server_certificate_is_refused_without_the_password(
    tls_port: int,
) -> None:
    # Verification is on by default, and the system's CAs do not know the test CA.
    error = await _refused(f"rediss://:{SECRET}@127.0.0.1:{tls_port}/0")
    assert "certificate verify failed" in str(error)
    assert SECRET not in str(error) and SECRET not in repr(error.__cause__)


async def test_a_missing_client_certificate_is_refused(mtls_port: int, certs: Certs) -> None:
    error = await _refused(f"rediss://127.0.0.1:{mtls_port}/0?ssl_ca_certs={certs.ca}")
    # TLS 1.3 refuses after the handshake: the alert ("certificate required") or, when the
    # server closes first, a reset reaches the client.
    assert "certificate required" in str(error) or "reset by peer" in str(error)


async def test_plain_tcp_to_a_tls_port_is_refused(tls_port: int) -> None:
    error = await _refused(f"redis://:{SECRET}@127.0.0.1:{tls_port}/0")
    assert "is unavailable" in str(error) and SECRET not in str(error)


async def test_unix_socket(unix_socket: Path) -> None:
    await _full_round(f"unix://:{SECRET}@{unix_socket}?db=2&namespace=sock")


async def test_a_missing_unix_socket_is_unavailable(unix_socket: Path) -> None:
    error = await _refused(f"unix://:{SECRET}@{unix_socket.parent / 'absent.sock'}")
    assert "absent.sock" in str(error) and SECRET not in str(error)


async def test_the_acl_user_can_do_nothing_else(acl_redis: tuple[str, str]) -> None:
    # The conformance suite's redis-acl case runs as this user (tests/conftest.py): check it is
    # limited, so that case proves conveyor's ACL rules are enough.
    url, _ = acl_redis
    limited = redis.Redis.from_url(url)
    try:
        for command in (("GET", "other:key"), ("FLUSHDB",), ("KEYS", "*"), ("CONFIG", "GET", "*")):
            with pytest.raises(NoPermissionError):
                limited.execute_command(*command)
    finally:
        limited.close()
    # A namespace outside the user's key pattern is refused, with the reason.
    outside = RedisBroker.from_url(f"{url}?namespace=elsewhere")
    try:
        with pytest.raises(BrokerError, match="no permissions to access one of the keys"):
            await outside.enqueue([_message("q")])
    finally:
        await outside.close()


DOCS = Path(__file__).resolve().parent.parent.parent / "docs"


def test_the_docs_show_the_acl_line_and_the_cluster_additions() -> None:
    docs = (DOCS / "brokers.md").read_text()
    assert acl_setuser_line() in docs.splitlines()
    assert " ".join(f"+{c}" for c in CLUSTER_COMMANDS) in " ".join(docs.split())


async def test_the_acl_rules_on_cluster(tmp_path: Path) -> None:
    with Fleet() as fleet:
        addresses = start_cluster(fleet, tmp_path)
        for node in fleet.processes:
            with node.client() as admin:
                version = server_version(admin)
                rules = acl_rules("conveyor-test-*", cluster=True, redis_version=version)
                admin.execute_command("ACL", "SETUSER", "conveyor", "on", ">acl-test-pw", *rules)
        await _full_round(
            f"redis+cluster://conveyor:acl-test-pw@{addresses[0]}?namespace=conveyor-test-acl"
        )


async def test_the_acl_rules_behind_sentinel(tmp_path: Path) -> None:
    # The data server's ACL user, reached through a Sentinel (Sentinels take no auth here).
    need_binaries("redis-sentinel")
    with Fleet() as fleet:
        primary = fleet.add(server(tmp_path / "primary"))
        with primary.client() as admin:
            rules = acl_rules("conveyor-test-*", redis_version=server_version(admin))
            admin.execute_command("ACL", "SETUSER", "conveyor", "on", ">acl-test-pw", *rules)
        watcher = fleet.add(sentinel(tmp_path / "sentinel", primary.port, quorum=1))
        await _full_round(
            f"redis+sentinel://conveyor:acl-test-pw@127.0.0.1:{watcher.port}/mymaster/0"
            "?namespace=conveyor-test-sentinel"
        )


def _primary_with_a_password(fleet: Fleet, tmp_path: Path) -> RedisProcess:
    return fleet.add(server(tmp_path / "primary", "--requirepass", "data-pw"))


def _sentinel_with_auth(
    fleet: Fleet, tmp_path: Path, primary: RedisProcess, sentinel_conf: str
) -> int:
    """The port of a Sentinel with ``sentinel_conf`` (its own auth) watching ``primary``."""
    auth = "sentinel auth-pass mymaster data-pw\n"
    watcher = sentinel(
        tmp_path / "sentinel", primary.port, quorum=1, extra_conf=sentinel_conf, master_conf=auth
    )
    return fleet.add(watcher).port


async def test_sentinels_with_a_password_of_their_own(tmp_path: Path) -> None:
    need_binaries("redis-sentinel")
    with Fleet() as fleet:
        primary = _primary_with_a_password(fleet, tmp_path)
        port = _sentinel_with_auth(fleet, tmp_path, primary, "requirepass sentinel-pw\n")
        base = f"redis+sentinel://:data-pw@127.0.0.1:{port}/mymaster/0?namespace=conveyor-test-sa"
        await _full_round(f"{base}&sentinel_password=sentinel-pw")

        # Without the Sentinels' password, or with a wrong one: a configuration error, as for
        # the data servers' password (BrokerError: a worker stops at start), no password shown.
        for url in (base, f"{base}&sentinel_password=wrong-pw"):
            message = str(await _refused(url, BrokerError))
            assert "the Sentinels refused their credentials" in message, message
            assert "data-pw" not in message and "wrong-pw" not in message
        # The synchronous client (enqueue_blocking) says the same.
        broker = RedisBroker.from_url(base)
        try:
            with pytest.raises(BrokerError, match="refused their credentials") as sync_error:
                await asyncio.to_thread(broker.enqueue_blocking, [_message("q")])
            assert not isinstance(sync_error.value, BrokerUnavailableError)
        finally:
            await broker.close()
        # One refuses, another is down: that may pass, so unavailable (retried), with both said.
        down = free_port()
        mixed = base.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{port},127.0.0.1:{down}/")
        message = str(await _refused(mixed))
        assert "no Sentinel named the primary" in message and "1 of 2 refused" in message
        # A service the Sentinels do not monitor.
        other = base.replace("/mymaster/", "/othermaster/") + "&sentinel_password=sentinel-pw"
        assert "no Sentinel named the primary" in str(await _refused(other))


async def test_an_acl_user_on_the_sentinels(tmp_path: Path) -> None:
    need_binaries("redis-sentinel")
    with Fleet() as fleet:
        primary = _primary_with_a_password(fleet, tmp_path)
        with primary.client(password="data-pw") as admin:
            if server_version(admin) < (6, 2):
                pytest.skip("Sentinel takes ACL users from Redis 6.2 on")
        users = "user default off\nuser watcher on >watch-pw +@all\n"
        port = _sentinel_with_auth(fleet, tmp_path, primary, users)
        await _full_round(
            f"redis+sentinel://:data-pw@127.0.0.1:{port}/mymaster/0?namespace=conveyor-test-su"
            "&sentinel_username=watcher&sentinel_password=watch-pw"
        )
