"""What the Redis broker makes of a server's version and settings (no server needed)."""

from __future__ import annotations

import pytest

from conveyor.brokers.redis.server_config import server_version, version_warnings


@pytest.mark.parametrize(
    "reply",
    [
        {b"server": b"redis", b"version": b"7.0.15", b"proto": 3},  # RESP3: a map
        [b"server", b"redis", b"version", b"7.0.15", b"proto", 2],  # RESP2: a flat list
        {"server": "redis", "version": "7.0.15"},  # decoded responses
    ],
)
def test_the_version_is_read_from_either_form_of_hello(reply: object) -> None:
    assert server_version(reply) == "7.0.15"


@pytest.mark.parametrize("reply", [None, b"OK", [b"version"], {b"server": b"redis"}, 7])
def test_a_reply_without_a_version_gives_none(reply: object) -> None:
    assert server_version(reply) is None


@pytest.mark.parametrize("version", ["6.0.0", "6.0.16", "6.2.14", "7.0.15", "7.4.2", "8.0.0"])
def test_redis_6_and_newer_raise_no_warning(version: str) -> None:
    assert version_warnings(version) == []


@pytest.mark.parametrize("version", ["5.0.7", "4.0.14", "2.8.24"])
def test_older_servers_are_named_in_the_warning(version: str) -> None:
    [warning] = version_warnings(version)
    assert version in warning and "6.0" in warning and "claims will fail" in warning


def test_an_unreadable_version_is_a_warning_too() -> None:
    [warning] = version_warnings(None)
    assert "could not read the server's version" in warning and "6.0" in warning


def test_odd_version_strings_do_not_raise() -> None:
    # Forks and builds print things like "7.2.4-rc1" or "255.255.255"; only the numbers count.
    assert version_warnings("7.2.4-rc1") == []
    assert version_warnings("255.255.255") == []
    assert len(version_warnings("x.y")) == 1
