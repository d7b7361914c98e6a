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


async def _failed_twice(url: str) -> str:
    broker = SqliteBroker.from_url(url)
    try:
        await broker.enqueue([TaskMessage(id="flaky", type="t", payload=b"{}", max_retry=1)])
        [lease] = await broker.claim(["default"], limit=1, lease_s=30)
        await broker.retry(lease, error="ConnectionError: upstream timed out", delay_s=0)
        [lease] = await broker.claim(["default"], limit=1, lease_s=30)
        await broker.archive(lease, error="ValueError: bad row\n17")
    finally:
        await broker.close()
    return "flaky"


def test_task_show_prints_the_retry_history(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    task_id = asyncio.run(_failed_twice(url))

    shown = CliRunner().invoke(cli, ["task", "show", "default", task_id, "-b", url])
    as_json = CliRunner().invoke(cli, ["task", "show", "default", task_id, "-b", url, "--json"])

    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.output.splitlines() if line.startswith("attempt ")]
    assert [line[:17] for line in lines] == ["attempt 1:       ", "attempt 2:       "]
    assert lines[0].endswith("+00:00  ConnectionError: upstream timed out")
    assert lines[1].endswith('+00:00  "ValueError: bad row\\n17"')  # control characters quoted
    history = json.loads(as_json.output)["history"]
    assert [(h["attempt"], h["error"]) for h in history] == [
        (1, "ConnectionError: upstream timed out"),
        (2, "ValueError: bad row\n17"),
    ]
    assert all(h["failed_at"].endswith("+00:00") for h in history)


def test_task_show_prints_no_history_for_a_task_that_never_failed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    asyncio.run(_enqueue(url, TaskMessage(id="fresh", type="t", payload=encode_json(None))))

    shown = CliRunner().invoke(cli, ["task", "show", "default", "fresh", "-b", url, "--json"])

    assert json.loads(shown.output)["history"] == []
