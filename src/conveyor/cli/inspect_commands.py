"""What the commands built on the Inspector share: opening it, ``--broker``, ``--json``.

``conveyor queue ...`` lives in :mod:`conveyor.cli.queue_commands`, ``conveyor task ...`` in
:mod:`conveyor.cli.task_commands`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click

from conveyor.cli.params import debugging, one_line
from conveyor.config import broker_url_from_env
from conveyor.errors import ConveyorError
from conveyor.inspector import Inspector
from conveyor.message import TaskState

STATES = [s.value for s in TaskState]
BROKER_HELP = "Broker URL (default: $CONVEYOR_BROKER_URL or sqlite:///conveyor.db)."


@contextmanager
def inspector_for(broker: str | None) -> Iterator[Inspector]:
    """An Inspector whose errors become one clean line (a traceback only with ``--debug``)."""
    try:
        with Inspector(broker or broker_url_from_env()) as inspector:
            yield inspector
    except (ConveyorError, ValueError, OSError) as exc:
        if debugging():
            raise
        raise one_line(exc) from None


def echo_json(data: object) -> None:
    """Print ``data`` as JSON (``--json``): one document, for scripts and ``jq``."""
    click.echo(json.dumps(data, indent=2, default=_json_value))


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


broker_option = click.option("--broker", "-b", metavar="URL", help=BROKER_HELP)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
