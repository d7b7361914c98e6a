"""``conveyor dashboard``: serve the web dashboard (needs ``pip install 'conveyor[web]'``)."""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING

import click

from conveyor.cli.inspect_commands import BROKER_HELP
from conveyor.config import broker_url_from_env
from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

AUTH_ENV = "CONVEYOR_DASHBOARD_AUTH"
"""Where ``conveyor dashboard`` reads ``USER:PASSWORD`` from when ``--basic-auth`` is not given."""


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
"""The ``Host`` names an unauthenticated dashboard on loopback answers to."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command(
    epilog="""\b
Examples:
  conveyor dashboard                                   # http://127.0.0.1:8181/
  conveyor dashboard -b redis://localhost:6379/0 --read-only
  CONVEYOR_DASHBOARD_AUTH=ops:s3cret conveyor dashboard --host 0.0.0.0
  conveyor dashboard --prefix /conveyor --basic-auth ops:s3cret"""
)
@click.option("--broker", "-b", metavar="URL", help=BROKER_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8181, show_default=True, type=click.IntRange(0, 65535))
@click.option("--read-only", is_flag=True, help="Hide and refuse every action.")
@click.option(
    "--basic-auth",
    metavar="USER:PASSWORD",
    help=f"Require these credentials on every request (default: ${AUTH_ENV}).",
)
@click.option("--prefix", default="", metavar="PATH", help="Serve under this path, e.g. /conveyor.")
def dashboard(
    broker: str | None,
    host: str,
    port: int,
    read_only: bool,
    basic_auth: str | None,
    prefix: str,
) -> None:
    """Serve the web dashboard: queues, tasks, and the buttons to fix them."""
    try:
        import uvicorn

        from conveyor.web.app import create_app, mounted
    except ImportError:
        raise click.ClickException(
            "the dashboard needs the web extra: pip install 'conveyor[web]'"
        ) from None
    auth = basic_auth or os.environ.get(AUTH_ENV) or None
    try:
        app = mounted(
            create_app(broker or broker_url_from_env(), read_only=read_only, basic_auth=auth),
            prefix,
        )
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if auth is None and not is_loopback(host):
        click.echo(
            f"warning: the dashboard listens on {host} without authentication: anyone who can "
            f"reach it can {'read' if read_only else 'change'} your queues; set --basic-auth "
            f"or ${AUTH_ENV}",
            err=True,
        )
    if auth is None and is_loopback(host):
        # Without auth, loopback is the only protection: refuse requests naming another host,
        # so a web page whose DNS name rebinds to 127.0.0.1 cannot read the dashboard.
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        served: ASGIApp = TrustedHostMiddleware(app, allowed_hosts=list(LOOPBACK_NAMES))
    else:
        served = app
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"conveyor dashboard on http://{shown}:{port}{prefix.rstrip('/')}/", err=True)
    uvicorn.run(served, host=host, port=port, log_level="warning", server_header=False)
