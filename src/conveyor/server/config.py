"""``ServerConfig``: where ``conveyor server`` listens and the limits it keeps."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from conveyor.errors import ConfigError

DEFAULT_MASENKO_PORT = 12345
DEFAULT_FAKTORY_PORT = 7419


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """A host and port to listen on."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, default_port: int) -> Endpoint:
        """Parse ``HOST:PORT``, ``:PORT``, ``HOST`` or ``[::1]:PORT`` (default host: loopback).

        Raises:
            ConfigError: the port is not a number from 0 to 65535.
        """
        host, port = text, ""
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.removeprefix(":")
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        try:
            number = int(port) if port else default_port
        except ValueError:
            raise ConfigError(f"{text!r} is not HOST:PORT") from None
        if not 0 <= number <= 65535:
            raise ConfigError(f"{text!r}: the port must be from 0 to 65535")
        return cls(host=host or "127.0.0.1", port=number)

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can connect (``localhost``, 127.0.0.0/8, ``::1``)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """What ``conveyor server`` serves and the limits it keeps.

    Example::

        config = ServerConfig(masenko=Endpoint(host="127.0.0.1", port=12345))
        server = TaskServer(broker, config)
        await server.start()
    """

    masenko: Endpoint | None = None
    """Where to speak masenko's line protocol, or ``None``."""
    faktory: Endpoint | None = None
    """Where to speak Faktory's Work Protocol, or ``None``."""
    password: str | None = None
    """Required by HELLO on the Faktory port (masenko's protocol has no authentication)."""
    tls_cert: str | None = None
    """PEM certificate file: serve TLS on every port when set (with ``tls_key``)."""
    tls_key: str | None = None
    """PEM private key file for ``tls_cert``."""
    heartbeat_s: float = 45.0
    """masenko: a connection silent this long gets ``no heartbeat`` and is closed."""
    idle_timeout_s: float = 300.0
    """Faktory: a connection silent this long is closed."""
    beat_timeout_s: float = 60.0
    """Faktory: a worker whose BEATs stopped this long is gone; its jobs are recovered."""
    max_line_bytes: int = 1024 * 1024
    """The longest request line; a longer one gets an error and the connection is closed."""
    max_payload_bytes: int = 64 * 1024
    """masenko: the largest payload (compact JSON), as the reference server allows."""
    max_connections: int = 1024
    """Connections over this many are refused with an error."""
    lease_s: float = 30.0
    """The broker lease on a fetched task, renewed at a third of it while its holder lives."""
    flush: bool = True
    """Faktory: whether FLUSH is allowed (it deletes every queue of the broker)."""
    shutdown_grace_s: float = 20.0
    """On stop, how long Faktory workers get to hear ``terminate`` (they BEAT every 15 s)."""

    def __post_init__(self) -> None:
        if self.masenko is None and self.faktory is None:
            raise ConfigError("the server needs a masenko or a Faktory endpoint (or both)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and a key")
        for name in ("heartbeat_s", "idle_timeout_s", "beat_timeout_s", "lease_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if not self.shutdown_grace_s >= 0:
            raise ConfigError("shutdown_grace_s must not be negative")
        for name in ("max_line_bytes", "max_payload_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")

    def public_bind_warnings(self) -> list[str]:
        """Warnings for ports reachable from other machines without authentication."""
        found = []
        if self.masenko is not None and not self.masenko.is_loopback:
            found.append(
                f"masenko port {self.masenko} is reachable from other machines and masenko's "
                "protocol has no authentication: anyone who can connect can push and take tasks"
            )
        if self.faktory is not None and not self.faktory.is_loopback and not self.password:
            found.append(
                f"Faktory port {self.faktory} is reachable from other machines without a "
                "password (set --password or $CONVEYOR_SERVER_PASSWORD)"
            )
        return found
