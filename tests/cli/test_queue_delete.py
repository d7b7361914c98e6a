"""``conveyor queue delete``: deletes, refuses with a clear message, and --force."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor import Client, Inspector, Task
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.cli.main import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_queue_delete_has_examples_in_its_help(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["queue", "delete", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "--force" in result.output


def test_queue_delete_refuses_a_queue_with_tasks_unless_forced(runner: CliRunner, url: str) -> None:
    with Client(url) as client:
        client.enqueue(Task("a.b", 1), queue="old")
        client.enqueue_in(3600, Task("a.b", 2), queue="old")
        client.enqueue(Task("a.b", 3), queue="kept")

    refused = runner.invoke(cli, ["queue", "delete", "old", "-b", url])
    assert refused.exit_code == 1
    assert "queue old holds 2 task(s); nothing deleted" in refused.output
    assert "--force" in refused.output
    assert "Traceback" not in refused.output
    with Inspector(url) as inspector:
        assert inspector.queue_info("old").size == 2

    deleted = runner.invoke(cli, ["queue", "delete", "old", "--force", "-b", url])
    assert deleted.exit_code == 0, deleted.output
    assert "deleted queue old" in deleted.output
    with Inspector(url) as inspector:
        assert inspector.queues() == ["kept"]


def test_queue_delete_an_empty_queue_needs_no_force(runner: CliRunner, url: str) -> None:
    assert runner.invoke(cli, ["queue", "pause", "idle", "-b", url]).exit_code == 0

    result = runner.invoke(cli, ["queue", "delete", "idle", "-b", url])

    assert result.exit_code == 0, result.output
    listing = runner.invoke(cli, ["queue", "ls", "-b", url])
    assert listing.output.strip() == "no queues"


async def test_queue_delete_refuses_a_queue_with_an_active_task(
    runner: CliRunner, url: str
) -> None:
    broker = SqliteBroker.from_url(url)
    try:
        with Client(url) as client:
            client.enqueue(Task("a.b", 1), queue="busy")
        [lease] = await broker.claim(["busy"], limit=1, lease_s=60)

        result = runner.invoke(cli, ["queue", "delete", "busy", "--force", "-b", url])

        assert result.exit_code == 1
        assert "queue busy has 1 active task(s)" in result.output
        assert "nothing deleted" in result.output
        assert (await broker.get_task("busy", lease.task.id)).id == lease.task.id
    finally:
        await broker.close()


@pytest.mark.slow
def test_demo_on_a_shared_broker_deletes_its_queue(runner: CliRunner, url: str) -> None:
    with Client(url) as client:
        client.enqueue(Task("a.b", 1), queue="users-own")

    result = runner.invoke(cli, ["demo", "--tasks", "8", "--broker", url])

    assert result.exit_code == 0, result.output
    assert "demo finished" in result.output
    with Inspector(url) as inspector:
        assert inspector.queues() == ["users-own"]
        assert inspector.queue_info("users-own").pending == 1


@pytest.mark.slow
@pytest.mark.redis
def test_demo_on_a_shared_redis_leaves_only_its_token_counter(
    runner: CliRunner, redis_url: str
) -> None:
    import redis

    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(redis_url)
    try:
        result = runner.invoke(
            cli, ["demo", "--tasks", "8", "--broker", f"{redis_url}?namespace={namespace}"]
        )

        assert result.exit_code == 0, result.output
        left = [k.decode() for k in client.scan_iter(match=f"{namespace}:*", count=10_000)]
        # Only the demo queue's fencing-token counter, kept so tokens never repeat.
        assert len(left) == 1 and re.fullmatch(
            re.escape(namespace) + r":\{demo-[0-9a-f]{8}\}:seq", left[0]
        ), left
    finally:
        for key in client.scan_iter(match=f"{namespace}:*", count=10_000):
            client.delete(key)
        client.close()
