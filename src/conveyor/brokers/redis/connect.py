"""Redis broker URLs: parsing (with redaction) and building redis-py clients from them.

Forms::

    redis://[[user]:password@]host[:port][/db][?namespace=name][&socket_timeout=seconds]
    rediss://...                         TLS; also ?ssl_cert_reqs=none|optional|required,
                                         ssl_ca_certs=, ssl_certfile=, ssl_keyfile=
    unix://[[user]:password@]/path/redis.sock[?db=N]
    redis+sentinel://[[user]:password@]h1:26379,h2:26379/service[/db]
                                         also ?sentinel_username=, sentinel_password=
    redis+cluster://[[user]:password@]h1:7000[,h2:7001]
    rediss+sentinel://..., rediss+cluster://...   TLS (to the Sentinels too), same ssl_ options

Every form takes ``namespace`` (default ``conveyor``) and ``socket_timeout`` (seconds a reply
may take before the connection counts as lost, default 10; it is also how long a connection
that went silent, such as a network blackhole, holds a worker up). The user and password are
the data servers'; the Sentinels' own, when they require one, are the ``sentinel_`` options.
Every error names the URL with its password redacted, and quotes no piece of a URL that holds
a password (an unescaped ``/``, ``?`` or ``#`` in it spills into the host, path or query).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode as SyncClusterNode
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry
from redis.sentinel import MasterNotFoundError
from redis.sentinel import Sentinel as SyncSentinel

from conveyor.config import quote_url_part, redact_url
from conveyor.errors import ConfigError
from conveyor.message import NAME_PATTERN, NAME_RULE

T = TypeVar("T")

__all__ = [
    "DEFAULT_NAMESPACE",
    "RedisTarget",
    "make_client",
    "make_sync_client",
    "parse_redis_url",
]

DEFAULT_NAMESPACE = "conveyor"
NO_PRIMARY = (MasterNotFoundError, AsyncMasterNotFoundError)  # the sync and asyncio Sentinels'
Kind = Literal["standalone", "sentinel", "cluster"]
_SCHEMES: dict[str, Kind] = {
    "redis": "standalone",
    "rediss": "standalone",
    "unix": "standalone",
    "redis+sentinel": "sentinel",
    "rediss+sentinel": "sentinel",
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
}
_TLS_SCHEMES = ("rediss", "rediss+sentinel", "rediss+cluster")
_TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_SENTINEL_AUTH = ("sentinel_username", "sentinel_password")
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_MAX_DB = 2**31 - 1  # Redis numbers its databases with a C int

# Reconnection: redis-py itself retries nothing. Its retry would send a command again after a
# lost reply, and none of the scripts can run twice safely (a claim would lease a second batch,
# an enqueue would report its own task as a conflict). The broker retries only failures to
# connect, when nothing was sent (ConnectRetry below): jittered exponential backoff, 50 ms
# doubling to 1 s, 8 tries, about 4.5 s at most. That rides out a Redis restart; anything else
# surfaces as BrokerUnavailableError and the worker's own loops try again later.
RETRY_BASE_S = 0.05
RETRY_CAP_S = 1.0
RETRY_COUNT = 8
SOCKET_TIMEOUT_S = 10.0  # default read timeout (?socket_timeout=): how long a silent link lasts
MAX_SOCKET_TIMEOUT_S = 3600.0
CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_S = 15
# The reply protocol every connection speaks, whatever redis-py's default (RESP2 up to 7.x,
# RESP3 from 8.0): the same replies on every redis-py version, and a version check that works
# on Redis 6.0 and 6.1 (whose HELLO needs the protocol named: HELLO 2 then changes nothing).
RESP_VERSION = 2


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RedisTarget:
    """A parsed Redis broker URL. ``repr`` never shows the password, nor any piece of it."""

    kind: Kind
    url: str = field(repr=False)
    safe_url: str
    hosts: tuple[tuple[str, int], ...] = ()
    path: str | None = None
    db: int = 0
    service: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = ()
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    namespace: str = DEFAULT_NAMESPACE
    socket_timeout_s: float = SOCKET_TIMEOUT_S

    def __repr__(self) -> str:
        # A password holding an unescaped "/", "?" or "#" spills into what the parser takes for
        # the path, service, port, database or options: with a password, only the redacted URL.
        if redact_url(self.url) != self.url:
            shown = ["kind", "safe_url"]
        else:
            shown = [f.name for f in fields(self) if f.repr]
        return "RedisTarget(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"


def _fail(url: str, why: str) -> ConfigError:
    return ConfigError(f"invalid Redis URL {redact_url(url)!r}: {why}")


def _number(text: str, most: int) -> int | None:
    """``text`` as an int from 0 to ``most`` written in ASCII digits ("²".isdigit() holds).

    None if it is not one. The length cap keeps ``int`` clear of Python's limit on digits (a
    ValueError of its own) and leaves room for leading zeros.
    """
    if text.isascii() and text.isdigit() and len(text) <= 20:
        value = int(text)
        return value if value <= most else None
    return None


def _host_port(url: str, item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise _fail(url, "missing host")
    if not port_text:
        return host, default_port
    port = _number(port_text, 65535)
    if not port:
        raise _fail(url, f"bad port {quote_url_part(port_text, url)}")
    return host, port


def _db(url: str, text: str) -> int:
    db = _number(text, _MAX_DB)
    if db is None:
        shown = quote_url_part(text, url)
        raise _fail(url, f"database must be a number from 0 to {_MAX_DB}, got {shown}")
    return db


def _options(url: str, query: str, kind: Kind, scheme: str) -> dict[str, str]:
    allowed = {"namespace", "socket_timeout"}
    if scheme == "unix":
        allowed.add("db")
    if scheme in _TLS_SCHEMES:
        allowed.update(_TLS_OPTIONS)
    if kind == "sentinel":
        allowed.update(_SENTINEL_AUTH)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _fail(url, "malformed query string") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            raise _fail(url, f"unknown option {quote_url_part(key, url)} for {kind} URLs")
        options[key] = value
    for name in _SENTINEL_AUTH:
        if options.get(name) == "":
            raise _fail(url, f"{name} must not be empty (leave it out for Sentinels without auth)")
    cert_reqs = options.get("ssl_cert_reqs")
    if cert_reqs is not None and cert_reqs not in _CERT_REQS:
        raise _fail(url, "ssl_cert_reqs must be none, optional or required")
    namespace = options.get("namespace", DEFAULT_NAMESPACE)
    if not NAME_PATTERN.fullmatch(namespace):
        raise _fail(url, f"namespace must be {NAME_RULE}")
    if "socket_timeout" in options:
        _socket_timeout(url, options["socket_timeout"])
    return options


def _socket_timeout(url: str, text: str) -> float:
    """The ``socket_timeout`` option: seconds, more than 0 and at most MAX_SOCKET_TIMEOUT_S."""
    try:
        seconds = float(text) if text.isascii() and len(text) <= 20 else math.nan
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_SOCKET_TIMEOUT_S:  # also refuses nan
        shown = quote_url_part(text, url)
        raise _fail(
            url, f"socket_timeout must be seconds in (0, {MAX_SOCKET_TIMEOUT_S:g}], got {shown}"
        )
    return seconds


def _split(url: str) -> tuple[str, Kind, str, str, str, str | None, str | None]:
    """scheme, kind, host list, path, query, user, password of ``url``."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"invalid Redis URL {redact_url(str(url))!r}: expected scheme://...")
    scheme, rest = url.split("://", 1)
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise _fail(url, "scheme must be one of " + ", ".join(f"{s}://" for s in _SCHEMES))
    if "#" in rest:
        raise _fail(url, "fragments are not allowed")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, pass_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(pass_text) if colon else None
    return scheme, kind, hostlist, slash + path, query, username, password


def parse_redis_url(url: str) -> RedisTarget:
    """Parse any Redis broker URL form into a :class:`RedisTarget`.

    Raises:
        ConfigError: (a ``ValueError``) naming the problem, with the password redacted.
    """
    scheme, kind, hostlist, path, query, username, password = _split(url)
    options = _options(url, query, kind, scheme)
    base = RedisTarget(
        kind=kind,
        url=url,
        safe_url=redact_url(url),
        username=username,
        password=password,
        tls=scheme in _TLS_SCHEMES,
        tls_options=tuple((k, v) for k, v in options.items() if k in _TLS_OPTIONS),
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
        namespace=options.get("namespace", DEFAULT_NAMESPACE),
        socket_timeout_s=_socket_timeout(url, options.get("socket_timeout", str(SOCKET_TIMEOUT_S))),
    )
    if scheme == "unix":
        if hostlist or len(path) < 2:
            raise _fail(url, "expected unix:///path/to/redis.sock")
        return replace(base, path=path, db=_db(url, options.get("db", "0")))
    if not hostlist:
        raise _fail(url, "missing host")
    default_port = 26379 if kind == "sentinel" else 6379
    hosts = tuple(_host_port(url, h, default_port) for h in hostlist.split(","))
    segments = [s for s in path.split("/") if s]
    if kind == "sentinel":
        if not 1 <= len(segments) <= 2:
            raise _fail(url, f"expected {scheme}://host:port[,host:port]/service[/db]")
        db = _db(url, segments[1]) if len(segments) == 2 else 0
        return replace(base, hosts=hosts, service=segments[0], db=db)
    if kind == "cluster":
        if segments:
            raise _fail(url, "Redis Cluster has no databases: drop the /path")
        return replace(base, hosts=hosts)
    if len(hosts) != 1:
        raise _fail(url, "use redis+sentinel:// or redis+cluster:// for several hosts")
    if len(segments) > 1:
        raise _fail(url, "expected at most one path segment, the database number")
    return replace(base, hosts=hosts, db=_db(url, segments[0]) if segments else 0)


def sent_nothing(error: BaseException) -> bool:
    """Whether redis-py failed while connecting, before any command went out (safe to resend).

    redis-py words every failure to connect "Error ... connecting to ..." or "Timeout connecting
    to server". Should that wording change, nothing is retried: never a command twice. A
    primary no Sentinel named was asked of the Sentinels only (a restart or failover under
    way), unless they refused the credentials, which waiting won't change.
    """
    if isinstance(error, NO_PRIMARY):
        return sentinel_refusals(error) == 0
    return "connecting to" in str(error) and not isinstance(error, AuthenticationError)


def sentinel_refusals(error: BaseException) -> int:
    """How many Sentinels refused their credentials, by redis-py's error when none named the
    primary: it lists each Sentinel's failure, NOAUTH and WRONGPASS as ``AuthenticationError``.
    """
    return str(error).count("AuthenticationError")


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=RETRY_BASE_S, cap=RETRY_CAP_S)


def _give_up(
    error: Exception, failures: int, retries: int, is_retryable: Callable[[Exception], bool] | None
) -> bool:
    """Whether a failed call must raise: out of tries, something was sent, or the caller says so."""
    if failures > retries or not sent_nothing(error):
        return True
    return is_retryable is not None and not is_retryable(error)


class ConnectRetry(Retry):
    """redis-py's asyncio retry, narrowed to failures to connect (:func:`sent_nothing`).

    The connection is dropped after every failure, as redis-py does; a command whose reply was
    lost is never sent again: the error reaches the broker, which reports the outcome unknown.
    """

    def __init__(self) -> None:
        super().__init__(_backoff(), RETRY_COUNT)

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """Run ``do``; retry it with backoff only while it fails to connect."""
        backoff = _backoff()
        failures = 0
        while True:
            try:
                return await do()
            except (RedisConnectionError, RedisTimeoutError) as error:
                failures += 1
                await (fail(error, failures) if with_failure_count else fail(error))
                if _give_up(error, failures, self.get_retries(), is_retryable):
                    raise
                await asyncio.sleep(backoff.compute(failures))


class SyncConnectRetry(SyncRetry):
    """:class:`ConnectRetry` for the synchronous client."""

    def __init__(self) -> None:
        super().__init__(_backoff(), RETRY_COUNT)

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """Run ``do``; retry it with backoff only while it fails to connect."""
        backoff = _backoff()
        failures = 0
        while True:
            try:
                return do()
            except (RedisConnectionError, RedisTimeoutError) as error:
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                if _give_up(error, failures, self.get_retries(), is_retryable):
                    raise
                time.sleep(backoff.compute(failures))


def _fresh_connections(client_class: type) -> dict[str, Any]:
    """Options that keep redis-py checking a pooled connection before handing it out.

    redis-py 8's pool skips that check (a connection the server closed, after a restart, is
    then used and fails) while maintenance notifications are "auto", their default; conveyor
    does not use them. Older redis-py always checks and has no such option, and some versions
    (7.0) have it on some client classes only: it is passed where ``client_class`` takes it.
    """
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:
        return {}
    if "maint_notifications_config" not in inspect.signature(client_class).parameters:
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def _common(target: RedisTarget, read_timeout: float | None, sync: bool) -> dict[str, Any]:
    """Connection options every client kind takes: auth, TLS, timeouts, retries, health checks."""
    kind: type = {
        (True, True): redis.RedisCluster,
        (True, False): redis.Redis,
        (False, True): RedisCluster,
        (False, False): aioredis.Redis,
    }[(sync, target.kind == "cluster")]
    return {
        **_fresh_connections(kind),
        "username": target.username,
        "password": target.password,
        "socket_timeout": read_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "retry": SyncConnectRetry() if sync else ConnectRetry(),
        "health_check_interval": HEALTH_CHECK_S,
        "protocol": RESP_VERSION,
        **_tls(target),
    }


def _tls(target: RedisTarget) -> dict[str, Any]:
    """TLS options of every connection to a ``rediss*://`` target; none for a plain one."""
    if not target.tls:
        return {}
    options = dict(target.tls_options)
    cert_reqs = options.get("ssl_cert_reqs", "required")
    return {
        "ssl": True,
        "ssl_cert_reqs": _CERT_REQS[cert_reqs],  # none also turns the hostname check off
        "ssl_ca_certs": options.get("ssl_ca_certs"),
        "ssl_certfile": options.get("ssl_certfile"),
        "ssl_keyfile": options.get("ssl_keyfile"),
    }


def _standalone(target: RedisTarget) -> dict[str, Any]:
    """Options of a standalone client: address and database (TLS is in :func:`_common`)."""
    return {
        "host": target.hosts[0][0] if target.hosts else "localhost",
        "port": target.hosts[0][1] if target.hosts else 6379,
        "unix_socket_path": target.path,
        "db": target.db,
        "socket_keepalive": True,
    }


def _sentinel_options(target: RedisTarget, *, sync: bool) -> dict[str, Any]:
    """Options of the connections to the Sentinels themselves: short timeouts, no retries,
    their own auth, TLS.

    No retries: redis-py asks each Sentinel in turn for the primary, and its default retries
    (with backoff, up to ten) would spend seconds on one that is down or refuses the password
    before asking the next. The broker's own retry (:class:`ConnectRetry`) repeats the whole
    discovery instead.
    """
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": 2.0,
        "retry": SyncRetry(NoBackoff(), 0) if sync else Retry(NoBackoff(), 0),
        "protocol": RESP_VERSION,
        "username": target.sentinel_username,
        "password": target.sentinel_password,
        **_tls(target),
    }


def make_client(target: RedisTarget, *, blocking: bool = False) -> aioredis.Redis | RedisCluster:
    """Build the redis-py asyncio client for ``target`` (connections open lazily).

    Args:
        target: the parsed URL.
        blocking: build a client for blocking calls (BLPOP): no socket read timeout, since the
            broker bounds each blocking call with its own deadline.
    """
    common = _common(target, None if blocking else target.socket_timeout_s, sync=False)
    if target.kind == "cluster":
        # The Cluster client's own loop resends a command after any connection error (not
        # through call_with_retry): no retries there. MOVED/ASK redirects are still followed.
        common["retry"] = Retry(NoBackoff(), 0)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts], **common
        )
    if target.kind == "sentinel":
        assert target.service is not None
        # redis-py before 8.2 leaves Sentinel, ClusterNode and master_for untyped and 8.2 types
        # them: each ignore also admits being unused, so every admitted release passes mypy.
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(target.hosts),
            sentinel_kwargs=_sentinel_options(target, sync=False),
            db=target.db,
            **common,
        )
        client: aioredis.Redis = sentinel.master_for(target.service)
        return client
    return aioredis.Redis(**_standalone(target), **common)


def make_sync_client(target: RedisTarget) -> redis.Redis | redis.RedisCluster:
    """Build a synchronous redis-py client for ``target``, configured as :func:`make_client`.

    For callers on plain threads: it skips the event loop, and redis-py's pool makes it safe to
    share between threads.
    """
    common = _common(target, target.socket_timeout_s, sync=True)
    if target.kind == "cluster":
        common["retry"] = SyncRetry(NoBackoff(), 0)  # as make_client, for the same reason
        return redis.RedisCluster(
            startup_nodes=[
                SyncClusterNode(host, port)  # type: ignore[no-untyped-call, unused-ignore]
                for host, port in target.hosts
            ],
            **common,
        )
    if target.kind == "sentinel":
        assert target.service is not None
        sentinel = SyncSentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(target.hosts),
            sentinel_kwargs=_sentinel_options(target, sync=True),
            db=target.db,
            **common,
        )
        client: redis.Redis = sentinel.master_for(target.service)  # type: ignore[no-untyped-call, unused-ignore]
        return client
    return redis.Redis(**_standalone(target), **common)
