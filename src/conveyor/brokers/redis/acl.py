"""The Redis ACL rules of a least-privilege user for conveyor: its namespace and what it calls.

``conveyor redis-acl`` prints them as an ``ACL SETUSER`` line; docs/brokers.md shows the line for
the default namespace, and the tests run the broker as a user made from these very rules, so a
change that calls another command fails them until it is listed here.
"""

from __future__ import annotations

import re

from conveyor.brokers.redis.connect import DEFAULT_NAMESPACE
from conveyor.errors import ConfigError
from conveyor.message import NAME_PATTERN, NAME_RULE

__all__ = [
    "CLUSTER_COMMANDS",
    "COMMANDS",
    "DEFAULT_USER",
    "OPTIONAL_COMMANDS",
    "PASSWORD_PLACEHOLDER",
    "acl_rules",
    "acl_setuser_line",
    "parse_redis_version",
]

DEFAULT_USER = "conveyor"
PASSWORD_PLACEHOLDER = "CHANGE-ME"  # noqa: S105 (to be replaced; the docs show it)

COMMANDS = (
    # scripts and the idle wait
    "evalsha", "script|load", "blpop",
    # connection
    "time", "ping", "hello", "select",
    # what the scripts and the client call on the namespace's keys
    "get", "set", "del", "exists", "type", "dump",
    "hget", "hmget", "hgetall", "hset", "hdel", "hkeys", "hincrby", "incrby",
    "lpush", "ltrim", "llen", "sadd", "srem", "smembers",
    "zadd", "zcard", "zpopmin", "zrange", "zrangebyscore", "zrem",
)  # fmt: skip
"""Commands the broker needs on a standalone server or behind Sentinel."""

CLUSTER_COMMANDS = ("cluster|slots", "cluster|shards", "cluster|nodes", "readonly", "command")
"""What redis-py's Cluster client also calls to discover the nodes and route commands."""

OPTIONAL_COMMANDS = {
    "config|get": "lets a worker check maxmemory-policy and the AOF settings at start "
    "(CONFIG GET can read every setting, passwords included)",
    "client|setinfo": "Redis 7.2 and newer: spares each new connection a refused reply "
    "(redis-py announces its name and version, and carries on when refused)",
}
"""Commands worth adding, with why; the broker works without them."""

ACL_SINCE = (6, 0)
"""The first Redis with ACL users."""

CHANNEL_RULES_SINCE = (6, 2)
"""The first Redis with pub/sub channel rules (``resetchannels``); before, every user may use
every channel, and the keyword is a syntax error. conveyor uses no channels."""

_USER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VERSION = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})")


def parse_redis_version(text: str) -> tuple[int, int]:
    """``"6.0"`` as ``(6, 0)``: the Redis version an ACL line is written for.

    Raises:
        ConfigError: not MAJOR.MINOR, or older than Redis 6.0 (which has no ACL users).
    """
    found = _VERSION.fullmatch(text.strip())
    if found is None:
        raise ConfigError(f"a Redis version is MAJOR.MINOR, such as 7.2, not {text!r}")
    version = (int(found[1]), int(found[2]))
    if version < ACL_SINCE:
        raise ConfigError(f"Redis {text} has no ACL users: they came with Redis 6.0")
    return version


def acl_rules(
    key_pattern: str,
    *,
    cluster: bool = False,
    extra: tuple[str, ...] = (),
    redis_version: tuple[int, ...] | None = None,
) -> list[str]:
    """The rules after ``ACL SETUSER <user> on >password``: keys ``key_pattern``, the commands.

    ``redis_version``: the servers' (None: 6.2 or newer); before 6.2 there are no channel rules.
    """
    commands = (*COMMANDS, *(CLUSTER_COMMANDS if cluster else ()), *extra)
    channels = (
        ["resetchannels"] if (redis_version or CHANNEL_RULES_SINCE) >= CHANNEL_RULES_SINCE else []
    )
    return ["resetkeys", f"~{key_pattern}", *channels, "-@all", *(f"+{c}" for c in commands)]


def acl_setuser_line(
    namespace: str = DEFAULT_NAMESPACE,
    *,
    user: str = DEFAULT_USER,
    password: str = PASSWORD_PLACEHOLDER,
    cluster: bool = False,
    extra: tuple[str, ...] = (),
    redis_version: tuple[int, ...] | None = None,
) -> str:
    """The ``ACL SETUSER`` line of a user limited to ``namespace``'s keys and conveyor's commands.

    ``redis_version``: of the servers the line is for (None: 6.2 or newer); see :func:`acl_rules`.

    Raises:
        ConfigError: a namespace that is not a valid name, a ``user`` or ``password`` with
            characters the line cannot carry, or an ``extra`` command not in
            :data:`OPTIONAL_COMMANDS`.
    """
    if not NAME_PATTERN.fullmatch(namespace):
        raise ConfigError(f"namespace must be {NAME_RULE}, not {namespace!r}")
    if not _USER.fullmatch(user):
        raise ConfigError(f"user must be 1-64 characters from [A-Za-z0-9_.-], not {user!r}")
    if not password or any(c.isspace() for c in password):
        raise ConfigError("the password must be non-empty and hold no whitespace")
    unknown = [c for c in extra if c not in OPTIONAL_COMMANDS]
    if unknown:
        raise ConfigError(f"not an optional command: {', '.join(unknown)}")
    rules = acl_rules(f"{namespace}:*", cluster=cluster, extra=extra, redis_version=redis_version)
    return " ".join(["ACL", "SETUSER", user, "on", f">{password}", *rules])
