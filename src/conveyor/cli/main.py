"""The ``conveyor`` root command group.

Examples::

    conveyor worker myproject.tasks:app --concurrency 20
    conveyor enqueue email:welcome '{"user_id": 42}' --in 5m
    conveyor queue ls                              # counts by state per queue
    conveyor task run default --all archived       # re-run the dead set
    conveyor check -b redis://localhost:6379/0     # the broker, its version and warnings
    conveyor demo
"""

from __future__ import annotations

import click

from conveyor.cli.check import check
from conveyor.cli.demo import demo
from conveyor.cli.enqueue import enqueue
from conveyor.cli.inspect_commands import queue, task
from conveyor.cli.redis_acl import redis_acl
from conveyor.cli.server import server
from conveyor.cli.worker import worker


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  conveyor demo                                  # see it work in ~10 seconds
  conveyor worker myproject.tasks:app            # run a worker for an App
  conveyor enqueue email:welcome '{"user_id": 42}' --in 5m

The broker URL comes from --broker, else $CONVEYOR_BROKER_URL, else the App's URL,
else sqlite:///conveyor.db.""",
)
@click.version_option(package_name="conveyor", prog_name="conveyor")
def cli() -> None:
    """conveyor: an asyncio-native background task queue."""


cli.add_command(worker)
cli.add_command(enqueue)
cli.add_command(demo)
cli.add_command(queue)
cli.add_command(task)
cli.add_command(redis_acl)
cli.add_command(check)
cli.add_command(server)


def main() -> None:
    """Run the command line (the ``conveyor`` console script and ``python -m conveyor``)."""
    cli(prog_name="conveyor")
