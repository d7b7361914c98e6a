"""Certificates and redis-server TLS options for tests (made with ``openssl`` on the fly).

A helper module (not a conftest): tests/conftest.py's ``redis-tls`` broker kind and
test_redis_transports.py both use it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from redis_servers import need_binaries


@dataclass(frozen=True)
class Certs:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(workdir: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True, timeout=30)


EC_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"


def _signed(workdir: Path, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    """A key and a certificate for ``subject``, signed by the CA in ``workdir``."""
    (workdir / f"{name}.ext").write_text(extensions)
    request = f"req {EC_KEY} -keyout {name}.key -out {name}.csr"
    _openssl(workdir, *request.split(), "-subj", subject)
    sign = f"x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2"
    _openssl(workdir, *sign.split(), "-out", f"{name}.crt", "-extfile", f"{name}.ext")
    return workdir / f"{name}.crt", workdir / f"{name}.key"


def make_certs(workdir: Path) -> Certs:
    """A test CA in ``workdir``, with a server certificate for 127.0.0.1 and a client one."""
    need_binaries("openssl")
    authority = f"req -x509 {EC_KEY} -keyout ca.key -out ca.crt -days 2"
    _openssl(workdir, *authority.split(), "-subj", "/CN=conveyor test CA")
    server_cert, server_key = _signed(
        workdir, "server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\n"
    )
    client_cert, client_key = _signed(
        workdir, "client", "/CN=conveyor test client", "extendedKeyUsage=clientAuth\n"
    )
    return Certs(workdir / "ca.crt", server_cert, server_key, client_cert, client_key)


def tls_settings(certs: Certs, port: int, auth_clients: str) -> dict[str, str]:
    """Redis TLS settings for a TLS port (beside the plain one) with the test's certificates."""
    return {
        "tls-port": str(port),
        "tls-cert-file": str(certs.server_cert),
        "tls-key-file": str(certs.server_key),
        "tls-ca-cert-file": str(certs.ca),
        "tls-auth-clients": auth_clients,
    }


def tls_options(certs: Certs, port: int, auth_clients: str) -> list[str]:
    """:func:`_tls_settings` as redis-server command-line options."""
    settings = tls_settings(certs, port, auth_clients)
    return [part for name, value in settings.items() for part in (f"--{name}", value)]
