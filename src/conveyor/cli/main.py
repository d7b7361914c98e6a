"""The ``conveyor`` root command group.

Examples::

    conveyor worker myproject.tasks:app --concurrency 20
    conveyor enqueue email:welcome '{"user_id": 42}' --in 5m
    conveyor queue ls                              # counts by state per queue
    conveyor task run default --all archived       # re-run the dead set
    conveyor check -b redis://localhost:6379/0     # the broker, its version and warnings
    conveyor schedule ls                           # schedule entries and their next fire
    conveyor stats --watch                         # live sizes, rates and workers
    conveyor demo
    conveyor dashboard --read-only                 # the web dashboard on 127.0.0.1:8181
"""

from __future__ import annotations

import click

from conveyor.cli.check import check
from conveyor.cli.dashboard import dashboard
from conveyor.cli.demo import demo
from conveyor.cli.enqueue import enqueue
from conveyor.cli.operations import stats, workers
from conveyor.cli.queue_commands import queue
from conveyor.cli.redis_acl import redis_acl
from conveyor.cli.schedule import schedule, scheduler
from conveyor.cli.server import server
from conveyor.cli.task_commands import task
from conveyor.cli.worker import worker
from conveyor.cli.workflow import workflow


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  conveyor demo                                  # see it work in ~10 seconds
  conveyor worker myproject.tasks:app            # run a worker for an App
  conveyor enqueue email:welcome '{"user_id": 42}' --in 5m
  conveyor stats --watch                         # queues, rates, workers, live
  conveyor workers                               # who runs what

An unreachable broker or a bad URL prints one line and exits 1 (--debug: traceback).
The broker URL comes from --broker, else $CONVEYOR_BROKER_URL, else the App's URL,
else sqlite:///conveyor.db.""",
)
@click.version_option(package_name="conveyor", prog_name="conveyor")
@click.option("--debug", is_flag=True, help="Show the traceback of an error, not one line.")
def cli(debug: bool) -> None:
    """conveyor: an asyncio-native background task queue."""


cli.add_command(worker)
cli.add_command(enqueue)
cli.add_command(demo)
cli.add_command(queue)
cli.add_command(task)
cli.add_command(redis_acl)
cli.add_command(check)
cli.add_command(schedule)
cli.add_command(scheduler)
cli.add_command(stats)
cli.add_command(workers)
cli.add_command(dashboard)
cli.add_command(server)
cli.add_command(workflow)


def main() -> None:
    """Run the command line (the ``conveyor`` console script and ``python -m conveyor``)."""
    cli(prog_name="conveyor")
