"""``conveyor redis-acl``: print the ACL line of a least-privilege Redis user for conveyor."""

from __future__ import annotations

import click

from conveyor.brokers.redis.acl import (
    DEFAULT_USER,
    OPTIONAL_COMMANDS,
    PASSWORD_PLACEHOLDER,
    acl_setuser_line,
    parse_redis_version,
)
from conveyor.brokers.redis.connect import DEFAULT_NAMESPACE
from conveyor.errors import ConfigError


@click.command(
    "redis-acl",
    epilog="""\b
Examples:
  conveyor redis-acl --namespace myapp --password "$PW" | redis-cli   # as an admin
  conveyor redis-acl --cluster --with 'config|get'
  conveyor redis-acl --redis-version 6.0""",
)
@click.option(
    "--namespace", default=DEFAULT_NAMESPACE, show_default=True, help="The ?namespace= of the URL."
)
@click.option("--user", default=DEFAULT_USER, show_default=True, help="The ACL user's name.")
@click.option(
    "--password", default=PASSWORD_PLACEHOLDER, show_default=True, help="Written as >PASSWORD."
)
@click.option("--cluster", is_flag=True, help="Add what redis-py's Cluster client needs.")
@click.option(
    "--with",
    "extra",
    multiple=True,
    type=click.Choice(sorted(OPTIONAL_COMMANDS)),
    help="Add an optional command (repeatable).",
)
@click.option(
    "--redis-version",
    metavar="MAJOR.MINOR",
    help="The servers' version, when older than 6.2 (no channel rules there).",
)
def redis_acl(
    namespace: str,
    user: str,
    password: str,
    cluster: bool,
    extra: tuple[str, ...],
    redis_version: str | None,
) -> None:
    """Print an ACL SETUSER line: the user may touch the namespace's keys and run conveyor's
    commands, nothing else (Redis 6 or newer). Give it to the data servers (every node of a
    Cluster; the primary and replicas behind Sentinel)."""
    try:
        version = parse_redis_version(redis_version) if redis_version is not None else None
        line = acl_setuser_line(
            namespace,
            user=user,
            password=password,
            cluster=cluster,
            extra=extra,
            redis_version=version,
        )
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(line)
