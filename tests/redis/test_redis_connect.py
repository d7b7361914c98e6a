"""Redis URL forms: parsing, clients built from them, redaction, and refusal of bad URLs."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from conveyor.brokers import open_broker
from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.connect import make_client, make_sync_client, parse_redis_url
from conveyor.errors import BrokerUnavailableError, ConfigError

SECRET = "s3cr3t-pw"


def test_plain_url_with_acl_user_password_and_db() -> None:
    t = parse_redis_url(f"redis://alice:{SECRET}@cache.example:6380/4?namespace=app")
    assert (t.kind, t.hosts, t.db, t.username, t.password) == (
        "standalone",
        (("cache.example", 6380),),
        4,
        "alice",
        SECRET,
    )
    assert t.namespace == "app" and not t.tls


def test_defaults() -> None:
    t = parse_redis_url("redis://localhost")
    assert (t.hosts, t.db, t.namespace, t.username, t.password) == (
        (("localhost", 6379),),
        0,
        "conveyor",
        None,
        None,
    )


def test_password_only_and_percent_encoding() -> None:
    t = parse_redis_url("redis://:p%40ss%3Aword@h/1")
    assert (t.username, t.password) == (None, "p@ss:word")


def test_tls_url_and_options() -> None:
    t = parse_redis_url("rediss://u:pw@h:6390/0?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem")
    assert t.tls and dict(t.tls_options) == {"ssl_cert_reqs": "none", "ssl_ca_certs": "/etc/ca.pem"}
    client = make_client(t)
    assert isinstance(client, aioredis.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_NONE
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"


def test_unix_socket_url() -> None:
    t = parse_redis_url(f"unix://:{SECRET}@/run/redis/redis.sock?db=3&namespace=n1")
    assert (t.path, t.db, t.password, t.namespace) == ("/run/redis/redis.sock", 3, SECRET, "n1")
    client = make_client(t)
    assert isinstance(client, aioredis.Redis)
    assert client.connection_pool.connection_kwargs["path"] == "/run/redis/redis.sock"


def test_sentinel_url() -> None:
    t = parse_redis_url(f"redis+sentinel://:{SECRET}@h1:26379,h2:26380/mymaster/2")
    assert (t.kind, t.hosts, t.service, t.db) == (
        "sentinel",
        (("h1", 26379), ("h2", 26380)),
        "mymaster",
        2,
    )
    assert parse_redis_url("redis+sentinel://h1/mymaster").hosts == (("h1", 26379),)
    assert isinstance(make_client(t), aioredis.Redis)


def test_sentinel_url_with_the_sentinels_own_auth() -> None:
    url = (
        f"redis+sentinel://app:{SECRET}@h1,h2/mymaster/0"
        "?sentinel_username=watch&sentinel_password=sentinel-secret&namespace=n"
    )
    t = parse_redis_url(url)
    assert (t.sentinel_username, t.sentinel_password) == ("watch", "sentinel-secret")
    assert (t.username, t.password, t.namespace) == ("app", SECRET, "n")
    assert "sentinel-secret" not in t.safe_url and "sentinel-secret" not in repr(t)
    for client in (make_client(t), make_sync_client(t)):
        pool = client.connection_pool
        # The data servers get the user's credentials, the Sentinels their own.
        assert (pool.connection_kwargs["username"], pool.connection_kwargs["password"]) == (
            "app",
            SECRET,
        )
        for sentinel in pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            kwargs = sentinel.connection_pool.connection_kwargs
            assert (kwargs["username"], kwargs["password"]) == ("watch", "sentinel-secret")
    plain = make_client(parse_redis_url(f"redis+sentinel://:{SECRET}@h1/mymaster"))
    for sentinel in plain.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        assert sentinel.connection_pool.connection_kwargs["password"] is None


@pytest.mark.parametrize(
    "url",
    ["redis://h/0", "rediss://h/0", "unix:///r.sock", "redis+sentinel://h1/m", "redis+cluster://h"],
)
def test_every_connection_speaks_resp2(url: str) -> None:
    # Whatever redis-py's default (RESP3 from 8.0): describe() sends HELLO 2, which on Redis 6.0
    # and 6.1 (no bare HELLO) reads the version and would switch a RESP3 connection's protocol.
    target = parse_redis_url(url)
    clients: list[Any] = [make_client(target), make_client(target, blocking=True)]
    if target.kind != "cluster":  # the sync Cluster client connects at once
        clients.append(make_sync_client(target))
    for client in clients:
        if isinstance(client, RedisCluster):
            assert client.nodes_manager.connection_kwargs["protocol"] == 2
            continue
        assert client.connection_pool.connection_kwargs["protocol"] == 2
        if target.kind == "sentinel":
            for sentinel in client.connection_pool.sentinel_manager.sentinels:
                assert sentinel.connection_pool.connection_kwargs["protocol"] == 2


def test_cluster_url() -> None:
    t = parse_redis_url("redis+cluster://n1:7000,n2:7001,[::1]:7002?namespace=c")
    assert (t.kind, t.hosts, t.namespace) == (
        "cluster",
        (("n1", 7000), ("n2", 7001), ("::1", 7002)),
        "c",
    )
    assert isinstance(make_client(t), RedisCluster)


def test_tls_sentinel_url_secures_the_sentinels_and_the_data_servers() -> None:
    t = parse_redis_url("rediss+sentinel://h1,h2:26380/mymaster/1?ssl_ca_certs=/etc/ca.pem")
    assert (t.kind, t.service, t.db, t.tls) == ("sentinel", "mymaster", 1, True)
    for client in (make_client(t), make_sync_client(t)):
        pool = client.connection_pool
        assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
        assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        for sentinel in pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            kwargs = sentinel.connection_pool.connection_kwargs
            assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
            assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_tls_cluster_url() -> None:
    t = parse_redis_url("rediss+cluster://n1:7000,n2:7001?ssl_cert_reqs=none")
    assert (t.kind, t.tls, dict(t.tls_options)) == ("cluster", True, {"ssl_cert_reqs": "none"})
    client = make_client(t)
    assert isinstance(client, RedisCluster)
    assert client.connection_kwargs["connection_class"].__name__ == "SSLConnection"
    assert client.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_NONE


def test_plain_forms_take_no_tls_options() -> None:
    for url in ("redis://h/0", "redis+sentinel://h/svc", "redis+cluster://h:7000"):
        assert not parse_redis_url(url).tls
        with pytest.raises(ConfigError, match="unknown option 'ssl_ca_certs'"):
            parse_redis_url(url + "?ssl_ca_certs=/etc/ca.pem")


def test_open_broker_accepts_every_redis_form() -> None:
    for url in (
        "redis://localhost/0",
        "rediss://localhost/0",
        "unix:///tmp/redis.sock",
        "redis+sentinel://a:26379,b:26379/mymaster/0",
        "redis+cluster://a:7000,b:7001",
        "rediss+sentinel://a:26379/mymaster/0",
        "rediss+cluster://a:7000",
    ):
        assert isinstance(open_broker(url), RedisBroker)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://u:{SECRET}@h:notaport/0",
        f"redis://u:{SECRET}@h:6379/zero",
        f"redis://u:{SECRET}@h:6379/0/extra",
        f"redis://u:{SECRET}@h:6379/0?bogus=1",
        f"redis://u:{SECRET}@h:6379/0?namespace=has{{brace}}",
        f"redis://u:{SECRET}@h:6379/0?namespace=",
        f"redis://u:{SECRET}@a:1,b:2/0",
        f"redis://u:{SECRET}@/0",
        f"rediss://u:{SECRET}@h/0?ssl_cert_reqs=maybe",
        f"unix://u:{SECRET}@host/sock",
        f"unix://u:{SECRET}@",
        f"redis+sentinel://u:{SECRET}@h1,h2",
        f"redis+sentinel://u:{SECRET}@h1/svc/db/x",
        f"redis+cluster://u:{SECRET}@h1:7000/0",
        f"redis://h:6379/0?sentinel_password={SECRET}",
        f"redis+cluster://h:7000?sentinel_username=u&sentinel_password={SECRET}",
        f"redis+sentinel://h1/m?sentinel_password={SECRET}&bogus=1",
        f"redis+sentinel://u:{SECRET}@h1/m?sentinel_password=",
        f"redis+sentinel://h1/m?sentinel_username=&sentinel_password={SECRET}",
        f"redis://u:{SECRET}@h:99999/0",
        f"redis://u:{SECRET}@h/0#frag",
        f"memcached://u:{SECRET}@h",
        "no-scheme",
    ],
)
def test_bad_urls_raise_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        RedisBroker.from_url(url)
    assert SECRET not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_repr_and_target_never_show_the_password() -> None:
    broker = RedisBroker.from_url(f"redis://alice:{SECRET}@localhost:6379/9")
    assert SECRET not in repr(broker)
    assert SECRET not in repr(parse_redis_url(f"redis+sentinel://:{SECRET}@h1/m"))
    assert "alice:***@" in repr(broker)


def test_target_repr_shows_the_parsed_fields_only_without_a_password() -> None:
    plain = repr(parse_redis_url("redis+sentinel://h1:26380,h2/mymaster/3?namespace=app"))
    assert "hosts=(('h1', 26380), ('h2', 26379))" in plain and "service='mymaster'" in plain
    assert "db=3" in plain and "namespace='app'" in plain
    secret = repr(parse_redis_url(f"redis+sentinel://u:{SECRET}@h1/mymaster/3"))
    assert secret == "RedisTarget(kind='sentinel', safe_url='redis+sentinel://u:***@h1/mymaster/3')"


@pytest.mark.parametrize(
    ("url", "db", "port"),
    [("redis://h:00080/007", 7, 80), (f"redis://h/{2**31 - 1}", 2**31 - 1, 6379)],
)
def test_numbers_with_leading_zeros_and_the_largest_database(url: str, db: int, port: int) -> None:
    target = parse_redis_url(url)
    assert (target.db, target.hosts[0][1]) == (db, port)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://h/{2**31}",
        "redis://h/" + "0" * 21,
        "redis://h:0",
        "redis://h:65536",
        "redis://h:" + "9" * 5000,
        "unix:///run/redis.sock?db=٣",  # an Arabic-Indic digit: isdigit() and int() take it
        "redis+sentinel://h/m/²",
    ],
)
def test_bad_numbers_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match=r"bad port|database must be a number"):
        parse_redis_url(url)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://u:{SECRET}/x@h",  # bad port
        f"redis://u:1/{SECRET}@h",  # database
        f"redis://u:1?{SECRET}=@h",  # unknown option
        f"unix://u:x@/s?db={SECRET}@",  # database option
    ],
)
def test_errors_quote_no_piece_of_a_url_with_a_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_redis_url(url)
    assert SECRET not in str(info.value) and "hidden: the URL holds a password" in str(info.value)


def test_errors_quote_the_bad_piece_of_a_url_without_a_password() -> None:
    with pytest.raises(ConfigError, match="got 'x'"):
        parse_redis_url("redis://h/x")
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):
        parse_redis_url("redis://h?bogus=1")


async def test_unreachable_server_maps_to_broker_unavailable_without_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from redis_servers import free_port

    broker = RedisBroker.from_url(f"redis://alice:{SECRET}@127.0.0.1:{free_port()}/0")
    broker_client = broker._client
    assert isinstance(broker_client, aioredis.Redis)
    broker_client.get_retry().update_retries(0)  # fail fast: no server will ever answer
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BrokerUnavailableError) as info:
        await broker.describe()
    await broker.close()
    assert SECRET not in str(info.value)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        f"rediss://alice:{SECRET}@h:6390/2?ssl_cert_reqs=optional&ssl_ca_certs=/etc/ca.pem",
        f"redis://alice:{SECRET}@h:6391/3?socket_timeout=2.5",
        f"unix://:{SECRET}@/run/redis.sock?db=4",
    ],
)
def test_sync_client_is_configured_like_the_async_one(url: str) -> None:
    # enqueue_blocking's client: same address, database, credentials, TLS, timeouts, retries.
    target = parse_redis_url(url)
    sync_client, async_client = make_sync_client(target), make_client(target)
    assert isinstance(sync_client, redis.Redis) and isinstance(async_client, aioredis.Redis)
    sync_kwargs = sync_client.connection_pool.connection_kwargs
    async_kwargs = async_client.connection_pool.connection_kwargs
    for name in (
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
        "ssl_cert_reqs",
        "ssl_ca_certs",
    ):
        assert sync_kwargs.get(name) == async_kwargs.get(name), name
    assert sync_client.connection_pool.connection_class.__name__ == (
        async_client.connection_pool.connection_class.__name__
    )
    sync_retry, async_retry = sync_client.get_retry(), async_client.get_retry()
    assert sync_retry is not None and async_retry is not None
    assert sync_retry.get_retries() == async_retry.get_retries() == 8


def test_sync_client_for_sentinel_asks_the_sentinels() -> None:
    target = parse_redis_url(f"redis+sentinel://:{SECRET}@127.0.0.1:26999/mymaster/5")
    client = make_sync_client(target)
    assert isinstance(client, redis.Redis)
    assert client.connection_pool.connection_kwargs["db"] == 5
    manager = client.connection_pool.sentinel_manager  # type: ignore[attr-defined]
    assert [s.connection_pool.connection_kwargs["port"] for s in manager.sentinels] == [26999]


@pytest.mark.parametrize(
    ("url", "seconds"),
    [
        ("redis://h", 10.0),
        ("redis://h?socket_timeout=2.5", 2.5),
        ("rediss://h?socket_timeout=60&namespace=app", 60.0),
        ("unix:///run/redis.sock?socket_timeout=0.5", 0.5),
        ("redis+sentinel://s1:26379/mymaster?socket_timeout=3", 3.0),
        ("redis+cluster://n1:7000?socket_timeout=3600", 3600.0),
    ],
)
def test_socket_timeout_sets_the_read_timeout_of_the_data_connections(
    url: str, seconds: float
) -> None:
    target = parse_redis_url(url)
    assert target.socket_timeout_s == seconds
    if target.kind == "standalone":
        for client in (make_client(target), make_sync_client(target)):
            assert client.connection_pool.connection_kwargs["socket_timeout"] == seconds
        # The client for blocking waits has no read timeout: each wait bounds itself.
        blocking = make_client(target, blocking=True)
        assert blocking.connection_pool.connection_kwargs["socket_timeout"] is None


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "3601", "x", "", "1e999", "²"])
def test_a_bad_socket_timeout_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="socket_timeout must be seconds"):
        parse_redis_url(f"redis://h?socket_timeout={value}")
