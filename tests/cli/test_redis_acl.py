"""``conveyor redis-acl``: the printed line, run on a real server, makes a user the broker works as
(within its namespace) and that can do nothing else."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from redis.exceptions import NoPermissionError
from redis_servers import Fleet, server, server_version

from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.acl import acl_setuser_line
from conveyor.cli.main import cli
from conveyor.errors import BrokerError
from conveyor.message import Completion, TaskMessage

pytestmark = pytest.mark.redis


def test_the_line_for_a_namespace_with_every_option() -> None:
    args = ["--namespace", "myapp", "--user", "app", "--password", "s3cret", "--cluster"]
    result = CliRunner().invoke(cli, ["redis-acl", *args, "--with", "config|get"])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line == acl_setuser_line(
        "myapp", user="app", password="s3cret", cluster=True, extra=("config|get",)
    )
    assert line.startswith("ACL SETUSER app on >s3cret resetkeys ~myapp:* resetchannels -@all ")
    assert "+cluster|slots" in line and line.endswith("+config|get")


def test_redis_before_6_2_gets_no_channel_rules() -> None:
    # Redis 6.0 and 6.1 refuse the line with "resetchannels" in it (a syntax error there).
    old = CliRunner().invoke(cli, ["redis-acl", "--redis-version", "6.1"]).output.strip()
    new = CliRunner().invoke(cli, ["redis-acl", "--redis-version", "6.2"]).output.strip()
    assert old == acl_setuser_line(redis_version=(6, 1)) == new.replace(" resetchannels", "")
    assert "resetchannels" in new and new == acl_setuser_line()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redis-version", "5.0"], "came with Redis 6.0"),
        (["--redis-version", "7"], "MAJOR.MINOR"),
        (["--namespace", "my app"], "namespace must be"),
        (["--namespace", "a{b}"], "namespace must be"),
        (["--user", "a b"], "user must be"),
        (["--password", "two words"], "no whitespace"),
        (["--with", "flushall"], "flushall"),
    ],
)
def test_bad_options_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["redis-acl", *args])
    assert result.exit_code == 2 and message in result.output


async def test_the_printed_line_makes_a_user_the_broker_works_as(tmp_path: Path) -> None:
    with Fleet() as fleet:
        process = fleet.add(server(tmp_path / "acl"))
        with process.client() as admin:
            major, minor, *_ = server_version(admin)
            args = [
                "--namespace",
                "myapp",
                "--password",
                "pw1",
                "--redis-version",
                f"{major}.{minor}",
            ]
            result = CliRunner().invoke(cli, ["redis-acl", *args])
            assert admin.execute_command(*shlex.split(result.output)) in (b"OK", "OK", True)
        url = f"redis://conveyor:pw1@127.0.0.1:{process.port}/0"
        broker = RedisBroker.from_url(f"{url}?namespace=myapp")
        elsewhere = RedisBroker.from_url(f"{url}?namespace=other")
        try:
            await broker.enqueue([TaskMessage(id="a", type="t")])
            [lease] = await broker.claim(["default"], limit=1, lease_s=30)
            assert await broker.complete([Completion(lease=lease)]) == [True]
            with pytest.raises(BrokerError, match="no permissions"):
                await elsewhere.enqueue([TaskMessage(id="b", type="t")])
        finally:
            await broker.close()
            await elsewhere.close()
        limited = redis.Redis(port=process.port, username="conveyor", password="pw1")
        try:
            with pytest.raises(NoPermissionError):
                limited.execute_command("FLUSHALL")
        finally:
            limited.close()
