"""conveyor workflow ls / show / cancel: each step with its task's own state."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor import App, chain
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.cli.main import cli


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_show_lists_each_step_with_its_task_state(url: str) -> None:
    app = App(url)

    @app.task(name="add", max_retry=3)
    def add(a: int, b: int) -> int:
        return a + b

    info = app.enqueue_workflow(chain(add.s(1, 1), add.s(2)))
    app.close()

    async def retry_first() -> None:
        broker = SqliteBroker.from_url(url)
        try:
            [lease] = await broker.claim(["default"], limit=1, lease_s=30)
            await broker.retry(lease, error="flaky", delay_s=3600)
        finally:
            await broker.close()

    asyncio.run(retry_first())
    runner = CliRunner()
    shown = runner.invoke(cli, ["workflow", "show", info.id, "--broker", url])
    assert shown.exit_code == 0, shown.output
    first, second = (line.strip() for line in shown.output.splitlines()[-2:])
    assert first.startswith("0.0  enqueued  task=retry retried=1  add on default")
    assert first.endswith("error=flaky")
    assert second.startswith("0.1  waiting  add on default")

    data = json.loads(runner.invoke(cli, ["workflow", "show", info.id, "-b", url, "--json"]).output)
    assert data["state"] == "pending"
    assert [s["task"] and s["task"]["state"] for s in data["steps"]] == ["retry", None]

    listed = runner.invoke(cli, ["workflow", "ls", "-b", url])
    assert listed.output.startswith(f"{info.id}  pending  0/2 steps")
    cancelled = runner.invoke(cli, ["workflow", "cancel", info.id, "-b", url])
    assert cancelled.output.strip() == f"cancelled {info.id}"
    failed = runner.invoke(cli, ["workflow", "ls", "--state", "failed", "-b", url])
    assert failed.output.strip() == "no failed workflows (page 1)"
