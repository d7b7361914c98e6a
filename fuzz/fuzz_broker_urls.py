"""Fuzz broker URL parsing: ``open_broker`` and every scheme's parser behind it.

Inputs are random strings around the real schemes (``memory://``, ``sqlite://``, ``redis://``,
``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``): user info with a
marker password, host lists with IPv6 brackets and ports, paths, query options, fragments,
percent-escapes and non-ASCII text. Checks:

- ``split_broker_url``, ``MemoryBroker.from_url``, ``SqliteBroker.from_url`` and
  ``parse_redis_url`` return or raise ``ConfigError``, nothing else;
- an accepted Redis URL also builds its redis-py client (``make_client``) without error;
- no error message contains the password, and neither does ``RedisTarget``'s ``repr`` nor its
  ``safe_url``.

Brokers are parsed, never connected: nothing here touches a server or creates a file.

Run: .venv/bin/python fuzz/fuzz_broker_urls.py -max_total_time=60
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _hostile import fuzz, number_text, provider

from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.redis.connect import make_client, parse_redis_url
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.config import split_broker_url
from conveyor.errors import ConfigError

SECRET = "Pw9zQx7"  # noqa: S105 - a marker to look for in error messages
SCHEMES = ["memory", "sqlite", "redis", "rediss", "unix", "redis+sentinel", "redis+cluster",
           "Redis", "http", "redis+", ""]  # fmt: skip
PIECES = ["", "/", "//", ":", "@", "[", "]", ",", "?", "&", "=", "#", "%", "%2F", "%40", "%zz",
          "%ff", "\x00", " ", "\n", "localhost", "::1", "[::1]", "h1", "h2", "0", "65535",
          "65536", "-1", "db", "namespace", "ssl_cert_reqs", "none", "required", "ssl_ca_certs",
          "busy_timeout_ms", "synchronous", "full", "normal", ":memory:", "mymaster", "é", "☃",
          "\ud7ff", "9" * 30]  # fmt: skip
OPTIONS = ["namespace", "db", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
           "busy_timeout_ms", "synchronous", "bogus"]  # fmt: skip


class _ParseOnlyMemory(MemoryBroker):
    """``from_url`` without the constructor: only the URL parsing runs (no shared state)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class _ParseOnlySqlite(SqliteBroker):
    """``from_url`` without the constructor: only the URL parsing runs (no thread, no file)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def _text(fdp: Any) -> str:
    parts = []
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        kind = fdp.ConsumeIntInRange(0, 2)
        if kind == 0:
            parts.append(fdp.PickValueInList(PIECES))
        elif kind == 1:
            parts.append(number_text(fdp))
        else:
            parts.append(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 8)))
    return "".join(parts)


def hostile_url(fdp: Any) -> str:
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80)))
    url = fdp.PickValueInList(SCHEMES) + fdp.PickValueInList(["://", ":/", ":", "//", ":///"])
    if fdp.ConsumeBool():
        user = _text(fdp) if fdp.ConsumeBool() else "user"
        url += f"{user}:{SECRET}{_text(fdp) if fdp.ConsumeBool() else ''}@"
    hosts = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        host = fdp.PickValueInList(["localhost", "127.0.0.1", "[::1]", "h1", "", _text(fdp)])
        if fdp.ConsumeBool():
            host += ":" + (number_text(fdp) if fdp.ConsumeBool() else _text(fdp))
        hosts.append(host)
    url += ",".join(hosts)
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        url += "/" + (_text(fdp) if fdp.ConsumeBool() else number_text(fdp))
    if fdp.ConsumeBool():
        pairs = []
        for _ in range(fdp.ConsumeIntInRange(0, 3)):
            pairs.append(f"{fdp.PickValueInList(OPTIONS)}={_text(fdp)}")
        url += "?" + fdp.PickValueInList(["&", ";", ""]).join(pairs)
    if fdp.ConsumeIntInRange(0, 7) == 0:
        url += "#" + _text(fdp)
    return str(url)


def _is_password(url: str) -> bool:
    """Whether the marker is a password: once in the URL, after a ":" and before an "@"."""
    before, _, after = url.partition(SECRET)
    return url.count(SECRET) == 1 and ":" in before and "@" in after


def _no_secret(exc: ConfigError, url: str) -> None:
    if _is_password(url):
        assert SECRET not in str(exc), (url, str(exc))


def test_one_input(data: bytes) -> None:
    fdp = provider(data)
    url = hostile_url(fdp)
    try:
        split_broker_url(url)
    except ConfigError as exc:
        _no_secret(exc, url)
    for parse in (_ParseOnlyMemory.from_url, _ParseOnlySqlite.from_url):
        try:
            parse(url)
        except ConfigError as exc:
            _no_secret(exc, url)
    try:
        target = parse_redis_url(url)
    except ConfigError as exc:
        _no_secret(exc, url)
        return
    if _is_password(url):
        assert SECRET not in target.safe_url, url
        assert SECRET not in repr(target), url
    make_client(target)


if __name__ == "__main__":
    fuzz(test_one_input)
