"""Broker URL parsing and redaction, shared by every entry point (client, server, CLI)."""

from __future__ import annotations

import os
from urllib.parse import SplitResult, urlsplit

from conveyor.errors import ConfigError

DEFAULT_BROKER_URL = "sqlite:///conveyor.db"
BROKER_URL_ENV = "CONVEYOR_BROKER_URL"
KNOWN_SCHEMES = (
    "memory",
    "sqlite",
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "redis+cluster",
)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, safe for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:***@{host}"
    return parts._replace(netloc=netloc).geturl()


def split_broker_url(url: str) -> SplitResult:
    """Parse a broker URL and check its scheme.

    Raises:
        ConfigError: (a ``ValueError``) for a malformed URL or an unknown scheme; the message
            never contains the password.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError("broker URL must be a non-empty string")
    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:  # multi-host (sentinel, cluster) netlocs have no one port
            parts.port  # noqa: B018 - urlsplit checks the port lazily
    except ValueError as exc:
        raise ConfigError(f"malformed broker URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme not in KNOWN_SCHEMES:
        raise ConfigError(
            f"unsupported broker URL {redact_url(url)!r}: scheme must be one of "
            + ", ".join(f"{s}://" for s in KNOWN_SCHEMES)
        )
    return parts


def broker_url_from_env(default: str = DEFAULT_BROKER_URL) -> str:
    """The broker URL from ``CONVEYOR_BROKER_URL``, or ``default``."""
    return os.environ.get(BROKER_URL_ENV) or default
