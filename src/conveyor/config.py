"""Broker URL parsing and redaction, shared by every entry point (client, server, CLI)."""

from __future__ import annotations

import os
import re
from urllib.parse import SplitResult, urlsplit

from conveyor.errors import ConfigError

DEFAULT_BROKER_URL = "sqlite:///conveyor.db"
BROKER_URL_ENV = "CONVEYOR_BROKER_URL"
_SCHEME = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*)?:")
# Secrets a URL may carry in its query string (the Sentinels' password), hidden like the user's.
_QUERY_SECRET = re.compile(r"([?&]sentinel_password=)[^&#]*")
KNOWN_SCHEMES = (
    "memory",
    "sqlite",
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, safe for logs and errors.

    Works on the text itself rather than on ``urlsplit``, which finds no user info at all in a
    URL whose scheme is missing or odd (``://user:pw@host``), and would let the password through.
    The user info is everything between ``//`` and the *last* ``@`` of the whole URL, not only of
    the authority: a password holding an unencoded ``/``, ``?`` or ``#`` (a mistake this is
    often called for) would otherwise end the authority early and be printed. An ``@`` later
    in the path or query can make this hide more than the password; never less. A
    ``sentinel_password`` option's value is hidden too.
    """
    url = _QUERY_SECRET.sub(r"\1***", url)
    before, at, tail = url.rpartition("@")
    if not at or ":" not in before:
        return url
    scheme = _SCHEME.match(before)
    head = scheme.group() if scheme else ""
    if not before.startswith("//", len(head)):
        # No "//" right after the scheme (``redis:user:pw@host``, ``unix:/u:pw@/path``): the
        # user info has no start, so everything before the "@" may be the password.
        return f"***@{tail}"
    userinfo = before[len(head) + 2 :]
    if ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{head}//{user}:***@{tail}"


def quote_url_part(part: str, url: str) -> str:
    """``part`` of ``url`` quoted for an error message, unless ``url`` holds a password.

    A password holding an unencoded ``/``, ``?`` or ``#`` spills into what a parser takes for
    the host, port, path or query, so any piece of such a URL may be a piece of its password:
    it is then left out, and only the redacted URL names the problem's place.
    """
    return repr(part) if redact_url(url) == url else "(hidden: the URL holds a password)"


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
        # urlsplit's message quotes the "port", which is the password when it holds a "/".
        why = exc if redact_url(url) == url else "bad host or port"
        raise ConfigError(f"malformed broker URL {redact_url(url)!r}: {why}") from None
    if parts.scheme not in KNOWN_SCHEMES:
        raise ConfigError(
            f"unsupported broker URL {redact_url(url)!r}: scheme must be one of "
            + ", ".join(f"{s}://" for s in KNOWN_SCHEMES)
        )
    return parts


def broker_url_from_env(default: str = DEFAULT_BROKER_URL) -> str:
    """The broker URL from ``CONVEYOR_BROKER_URL``, or ``default``."""
    return os.environ.get(BROKER_URL_ENV) or default
