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

_USER = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def acl_rules(key_pattern: str, *, cluster: bool = False, extra: tuple[str, ...] = ()) -> list[str]:
    """The rules after ``ACL SETUSER <user> on >password``: keys ``key_pattern``, the commands."""
    commands = (*COMMANDS, *(CLUSTER_COMMANDS if cluster else ()), *extra)
    return ["resetkeys", f"~{key_pattern}", "resetchannels", "-@all", *(f"+{c}" for c in commands)]


def acl_setuser_line(
    namespace: str = DEFAULT_NAMESPACE,
    *,
    user: str = DEFAULT_USER,
    password: str = PASSWORD_PLACEHOLDER,
    cluster: bool = False,
    extra: tuple[str, ...] = (),
) -> str:
    """The ``ACL SETUSER`` line of a user limited to ``namespace``'s keys and conveyor's commands.

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
    rules = acl_rules(f"{namespace}:*", cluster=cluster, extra=extra)
    return " ".join(["ACL", "SETUSER", user, "on", f">{password}", *rules])
