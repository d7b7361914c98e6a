"""Real, unmodified Faktory clients against ``conveyor server``: pyfaktory, faktory, faktory-worker.

Each client runs as a subprocess (both Python libraries install signal handlers, which only a
main thread may do; Node is another runtime). Jobs cross both ways: pushed by the client and
run by a conveyor worker, enqueued by conveyor and run by the client's own worker loop, through
ack, fail then retry, dead, and a worker killed in the middle of a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import AsyncClient, Task
from conveyor.brokers.protocol import Broker
from conveyor.message import TaskState
from conveyor.server import TaskServer
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from server.conftest import ServerFactory
from support import eventually
from worker.harness import fast, serving

HERE = Path(__file__).parent
NODE_DIR = HERE / "node"
PASSWORD = "s3cret"
CLIENTS = ["pyfaktory", "faktory", "node"]

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("broker", ["sqlite"], indirect=True)]


def node_ready() -> None:
    """Install Node's faktory-worker from the lock file when it is missing (``npm ci``)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are needed for the faktory-worker tests")
        pytest.skip("node and npm are not installed")
    if not (NODE_DIR / "node_modules" / "faktory-worker").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       capture_output=True, timeout=300)  # fmt: skip


def python_client_ready(name: str) -> None:
    module = "pyfaktory" if name == "pyfaktory" else "faktory"
    try:
        __import__("importlib.util").util.find_spec(module) or pytest.skip(f"{module} missing")
    except ImportError:
        pytest.skip(f"{module} is not installed (pip install -e '.[dev]')")


class ClientProcess:
    """A client subprocess whose stdout lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, client: str, port: int, *args: str) -> ClientProcess:
        url = f"tcp://:{PASSWORD}@127.0.0.1:{port}"
        if client == "node":
            command = ["node", str(NODE_DIR / "faktory_node.js"), url, *args]
        else:
            command = [sys.executable, str(HERE / "clients" / "faktory_py.py"), client, url, *args]
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode().strip())

    async def saw(self, text: str, within: float = 20.0) -> None:
        async def seen() -> bool:
            return any(text in line for line in self.lines)

        await eventually(seen, within=within)

    async def ran(self, jobtype: str, args: list[Any], within: float = 20.0) -> None:
        """Wait until a handler printed ``ran <jobtype> <args as JSON>``."""

        async def seen() -> bool:
            prefix = f"ran {jobtype} "
            return any(
                line.startswith(prefix) and json.loads(line[len(prefix) :]) == args
                for line in self.lines
            )

        await eventually(seen, within=within)

    async def kill(self) -> None:
        """SIGKILL the client and every process it started (pyfaktory runs jobs in children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        await asyncio.wait_for(self._reader, 10.0)


@pytest.fixture
async def processes() -> AsyncIterator[list[ClientProcess]]:
    started: list[ClientProcess] = []
    yield started
    for p in started:
        await p.kill()


@pytest.fixture(params=CLIENTS)
def client_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    node_ready() if name == "node" else python_client_ready(name)
    return name


async def run(
    processes: list[ClientProcess], client: str, server: TaskServer, *args: str
) -> ClientProcess:
    p = await ClientProcess.start(client, server.addresses["faktory"][1], *args)
    processes.append(p)
    return p


async def test_jobs_pushed_by_the_client_run_on_a_conveyor_worker(
    client_name: str, start_server: ServerFactory, broker: Broker, processes: list[ClientProcess]
) -> None:
    seen: list[tuple[str, Any]] = []

    async def handler(ctx: TaskContext, task: Task) -> None:
        seen.append((task.type, task.payload))

    async with start_server(password=PASSWORD) as server:
        pusher = await run(
            processes, client_name, server, "push", "default", "ok", '[1, "two", {"three": 3}]'
        )
        await pusher.saw("pushed")
        async with serving(Server(broker, **fast()), handler):

            async def ran() -> bool:
                return bool(seen)

            await eventually(ran, within=10.0)
    assert seen == [("ok", [1, "two", {"three": 3}])]


async def test_the_clients_worker_loop_acks_fails_retries_and_kills(
    client_name: str, start_server: ServerFactory, broker: Broker, processes: list[ClientProcess]
) -> None:
    client = AsyncClient(broker)
    async with start_server(password=PASSWORD, beat_timeout_s=1.0, lease_s=1.0) as server:
        done = await client.enqueue(Task("ok", [7, "x"]), queue="q")
        retried = await client.enqueue(Task("fail", {"n": 1}), queue="q", max_retry=1)
        dead = await client.enqueue(Task("fail", {"n": 2}), queue="q", max_retry=0)
        worker = await run(processes, client_name, server, "work", "q")
        await worker.ran("ok", [7, "x"])
        await worker.ran("fail", [{"n": 1}])
        await worker.ran("fail", [{"n": 2}])

        async def settled() -> bool:
            states = [(await broker.get_task("q", t.id)).state for t in (retried, dead)]
            return states == [TaskState.RETRY, TaskState.ARCHIVED]

        await eventually(settled, within=10.0)
        with pytest.raises(Exception, match="no task"):
            await broker.get_task("q", done.id)  # acked: gone
        info = await broker.get_task("q", retried.id)
        assert "asked to fail" in (info.last_error or "")
        assert info.next_process_at is not None  # Faktory's backoff: at least 15 s

        # Retries exhausted: the retried job, run again now, fails into the dead set.
        await broker.run_task("q", retried.id)

        async def dead_now() -> bool:
            return (await broker.get_task("q", retried.id)).state is TaskState.ARCHIVED

        await eventually(dead_now, within=10.0)

        # A worker killed in the middle of a job: its job comes back.
        hung = await client.enqueue(Task("hang", None), queue="q")
        await worker.saw("started")
        assert (await broker.get_task("q", hung.id)).state is TaskState.ACTIVE
        await worker.kill()

        async def back() -> bool:
            info = await broker.get_task("q", hung.id)
            return info.state in (TaskState.RETRY, TaskState.PENDING) and info.retried == 1

        await eventually(back, within=20.0)
