"""ServerConfig and Endpoint: parsing, validation, the public-bind warnings."""

from __future__ import annotations

import pytest

from conveyor import ConfigError
from conveyor.server import Endpoint, ServerConfig


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [(":7419", "127.0.0.1", 7419), ("0.0.0.0:1", "0.0.0.0", 1), ("localhost", "localhost", 99),
     ("[::1]:5", "::1", 5), ("", "127.0.0.1", 99)],
)  # fmt: skip
def test_endpoints_parse(text: str, host: str, port: int) -> None:
    assert Endpoint.parse(text, default_port=99) == Endpoint(host=host, port=port)


@pytest.mark.parametrize("text", ["host:port", "h:70000", "h:-1"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        Endpoint.parse(text, default_port=1)


def test_a_server_needs_a_port_and_sane_limits() -> None:
    with pytest.raises(ConfigError):
        ServerConfig()
    local = Endpoint(host="127.0.0.1", port=1)
    with pytest.raises(ConfigError):
        ServerConfig(masenko=local, max_connections=0)
    with pytest.raises(ConfigError):
        ServerConfig(masenko=local, lease_s=0)
    with pytest.raises(ConfigError):
        ServerConfig(masenko=local, tls_cert="cert.pem")


def test_public_binds_warn_unless_safe() -> None:
    public = Endpoint(host="0.0.0.0", port=1)
    local = Endpoint(host="::1", port=2)
    assert ServerConfig(masenko=local, faktory=local).public_bind_warnings() == []
    assert len(ServerConfig(masenko=public, faktory=public).public_bind_warnings()) == 2
    # A password guards Faktory; masenko's protocol has none, so it always warns.
    assert (
        len(ServerConfig(masenko=public, faktory=public, password="pw").public_bind_warnings()) == 1
    )
