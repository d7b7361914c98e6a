"""``conveyor check``: connect to the broker and report what it is, before deploying on it."""

from __future__ import annotations

import logging

import click

from conveyor.cli.inspect_commands import broker_option, inspector_for


@click.command(
    "check",
    epilog="""\b
Examples:
  conveyor check
  conveyor check -b redis://localhost:6379/0 --fail-on-warning   # in a deploy pipeline""",
)
@broker_option
@click.option(
    "--fail-on-warning", is_flag=True, help="Exit with status 1 when there is any warning."
)
def check(broker: str | None, fail_on_warning: bool) -> None:
    """Connect to the broker and print its backend, location (server version), durability and
    any warnings about its settings (such as an evicting Redis). Exits 1 when the broker
    cannot be reached."""
    # The broker logs its warnings as well; with no logging set up, Python would print them a
    # second time on stderr. A handler on conveyor's logger keeps them to the lines below.
    quiet = logging.NullHandler()
    logging.getLogger("conveyor").addHandler(quiet)
    try:
        with inspector_for(broker) as inspector:
            info = inspector.describe()
    finally:
        logging.getLogger("conveyor").removeHandler(quiet)
    click.echo(f"broker:     {info.backend} at {info.location}")
    click.echo(f"durability: {info.durability}")
    for warning in info.warnings:
        click.echo(f"warning:    {warning}")
    if not info.warnings:
        click.echo("no warnings")
    elif fail_on_warning:
        raise click.ClickException(f"{len(info.warnings)} warning(s); see above")
