"""``conveyor task show`` prints a pipeline task's result log (one line per step) and headers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from conveyor.brokers.sqlite import SqliteBroker
from conveyor.cli.main import cli
from conveyor.headers import encode_headers
from conveyor.message import TaskMessage, encode_json
from conveyor.progress import PipelineStepState, Progress, StepLog


async def archived_pipeline(url: str) -> str:
    """A pipeline task archived in its second step, with the progress a worker stores."""
    broker = SqliteBroker.from_url(url)
    try:
        await broker.enqueue([TaskMessage(id="order-7", type="orders.checkout", payload=b"{}")])
        [lease] = await broker.claim(["default"], limit=1, lease_s=30)
        progress = Progress(next=1, data={"reserved": True}, started=1)
        progress.set_entry(
            0, StepLog(step="reserve", state=PipelineStepState.SUCCEEDED, attempts=1)
        )
        progress.set_entry(
            1,
            StepLog(
                step="charge", state=PipelineStepState.FAILED, attempts=2, error="ValueError: no"
            ),
        )
        await broker.save_progress(lease, progress.encode())
        await broker.archive(lease, error="SkipRetry: non-reentrant step charge failed")
    finally:
        await broker.close()
    return "order-7"


def test_task_show_prints_each_step_reached(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    task_id = asyncio.run(archived_pipeline(url))

    shown = CliRunner().invoke(cli, ["task", "show", "default", task_id, "-b", url])

    assert shown.exit_code == 0, shown.output
    assert "step 1:          reserve  succeeded  attempts=1\n" in shown.output
    assert "step 2:          charge  failed  attempts=2  error=ValueError: no\n" in shown.output


def test_task_show_prints_no_steps_for_a_plain_task(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    message = TaskMessage(id="plain", type="t", payload=encode_json(None))
    asyncio.run(_enqueue(url, message))

    shown = CliRunner().invoke(cli, ["task", "show", "default", "plain", "-b", url])

    assert shown.exit_code == 0, shown.output
    assert "step 1:" not in shown.output


async def _enqueue(url: str, message: TaskMessage) -> None:
    broker = SqliteBroker.from_url(url)
    try:
        await broker.enqueue([message])
    finally:
        await broker.close()


def test_task_show_prints_the_headers_quoted_and_in_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    headers = encode_headers({"tenant": "acme", "note": "two\nlines"})
    message = TaskMessage(id="tagged", type="t", payload=encode_json(None), headers=headers)
    asyncio.run(_enqueue(url, message))

    shown = CliRunner().invoke(cli, ["task", "show", "default", "tagged", "-b", url])
    as_json = CliRunner().invoke(cli, ["task", "show", "default", "tagged", "-b", url, "--json"])

    assert shown.exit_code == 0, shown.output
    assert 'header:          "tenant": "acme"\n' in shown.output
    assert 'header:          "note": "two\\nlines"\n' in shown.output
    assert json.loads(as_json.output)["headers"] == {"tenant": "acme", "note": "two\nlines"}
