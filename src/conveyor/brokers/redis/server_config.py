"""What a Redis server's configuration means for conveyor: durability and warnings.

Durability follows the table in the project's reliability notes: with AOF and
``appendfsync always`` an acknowledged write was fsynced before the reply; ``everysec`` may lose
about a second on an OS crash; no AOF keeps nothing. Any ``maxmemory-policy`` but ``noeviction``
lets Redis delete queue keys under memory pressure.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CONFIG_NAMES",
    "MIN_VERSION",
    "durability",
    "flatten_config",
    "server_version",
    "version_warnings",
    "warnings",
]

CONFIG_NAMES = ("maxmemory-policy", "appendonly", "appendfsync")
# BLPOP's fractional timeouts (the idle wait) and ACL users came with Redis 6.0; the scripts use
# no later command.
MIN_VERSION = (6, 0)


def server_version(hello: Any) -> str | None:
    """The ``version`` field of a ``HELLO`` reply (a map under RESP3, a flat list under RESP2)."""
    if isinstance(hello, list):
        hello = dict(zip(hello[::2], hello[1::2], strict=False))
    if not isinstance(hello, dict):
        return None
    version = hello.get(b"version", hello.get("version"))
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    return version if isinstance(version, str) else None


def version_warnings(version: str | None) -> list[str]:
    """Problems with the server's version, as sentences (None: HELLO failed, Redis < 6.0)."""
    needed = ".".join(map(str, MIN_VERSION))
    if version is None:
        return [
            f"could not read the server's version (HELLO refused or unknown): conveyor needs "
            f"Redis {needed} or newer"
        ]
    numbers = tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:2])
    if numbers < MIN_VERSION:
        return [f"Redis {version} is older than {needed}, which conveyor needs: claims will fail"]
    return []


def flatten_config(reply: Any) -> dict[str, str]:
    """A CONFIG GET reply as ``{name: value}``; on Cluster the reply nests one dict per node."""
    if not isinstance(reply, dict):
        return {}
    out: dict[str, str] = {}
    for key, value in reply.items():
        if isinstance(value, dict):
            out.update(flatten_config(value))
        else:
            name = key.decode() if isinstance(key, bytes) else str(key)
            out[name] = value.decode() if isinstance(value, bytes) else str(value)
    return out


def warnings(config: dict[str, str]) -> list[str]:
    """Problems with the server's configuration, as sentences for logs and banners."""
    policy = config.get("maxmemory-policy")
    if policy is None:
        return ["could not read the server's configuration (CONFIG GET refused)"]
    if policy != "noeviction":
        return [
            f"maxmemory-policy is {policy!r}: Redis may evict queue keys and lose tasks; "
            "set it to 'noeviction'"
        ]
    return []


def durability(config: dict[str, str], *, sentinel: bool) -> str:
    """One sentence on what an acknowledged enqueue survives with these settings."""
    aof, fsync = config.get("appendonly"), config.get("appendfsync")
    if aof is None:
        text = "unknown: the server's AOF settings could not be read"
    elif aof != "yes":
        text = "in memory only (AOF off): nothing survives a Redis crash"
    elif fsync == "always":
        text = "fsynced before the reply (appendfsync always): survives Redis and OS crashes"
    elif fsync == "everysec":
        text = (
            "in memory, fsynced within ~1 s (appendfsync everysec): an OS crash may lose "
            "~1 s of writes, a Redis crash one write"
        )
    else:
        text = "in memory, fsync left to the OS (appendfsync no): a crash may lose writes"
    if sentinel:
        text += "; a Sentinel failover may lose acknowledged writes (asynchronous replicas)"
    return text
