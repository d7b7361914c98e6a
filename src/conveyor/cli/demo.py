"""``conveyor demo``: a producer and a worker on an embedded SQLite broker, with live progress.

It shows the whole life of tasks in ~5 seconds: a batch of quick tasks, one that fails once and
is retried, one scheduled a few seconds ahead, and one that gives up and is archived. It uses
only the public API (App, ``@app.task``, ``fn.aio.enqueue``, Server, AsyncInspector).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from conveyor.app import App
from conveyor.cli.params import LOG_LEVELS, configure_logging, debugging, one_line
from conveyor.errors import ConveyorError, QueueInUseError, SkipRetry
from conveyor.inspector import AsyncInspector
from conveyor.message import QueueStats
from conveyor.worker.context import current_context

DEADLINE_S = 14.0
"""The demo gives up (exit 1) if the work is not done by then; it normally takes ~4 s."""

SCHEDULE_IN = timedelta(seconds=3)


class DemoTimeoutError(ConveyorError):
    """The demo's tasks did not all finish in time."""


@dataclass
class Counters:
    """What the demo's handlers report (the worker runs in this process)."""

    done: int = 0
    retried: int = 0
    batch_done_at: float = 0.0
    """When the last quick task finished (monotonic): throughput excludes the scheduled wait."""


def build_app(url: str, counters: Counters) -> App:
    """The demo's App: four task functions that exercise success, retry, schedule and archive."""
    app = App(url)

    @app.task(name="demo.resize_image")
    async def resize_image(image_id: int) -> dict[str, int]:
        await asyncio.sleep(random.uniform(0.005, 0.04))
        counters.done += 1
        counters.batch_done_at = time.monotonic()
        return {"image_id": image_id, "width": 128}

    @app.task(name="demo.flaky_upload")
    async def flaky_upload(path: str) -> None:
        if current_context().retry_count == 0:
            counters.retried += 1
            raise ConnectionError(f"simulated network error uploading {path}")
        counters.done += 1

    @app.task(name="demo.send_reminder")
    async def send_reminder(user_id: int) -> None:
        counters.done += 1

    @app.task(name="demo.charge_card", max_retry=0)
    async def charge_card(order_id: int) -> None:
        raise SkipRetry(f"card declined for order {order_id} (archived, not retried)")

    return app


def _throughput(counters: Counters, started: float) -> float:
    return counters.done / max((counters.batch_done_at or time.monotonic()) - started, 1e-6)


def _render(progress: Progress, stats: QueueStats, counters: Counters, started: float) -> Group:
    line = Text.assemble(
        ("done ", "bold"), (str(counters.done), "green"),
        ("   retried ", "bold"), (str(counters.retried), "yellow"),
        ("   archived ", "bold"), (str(stats.archived), "red"),
        ("   scheduled ", "bold"), (str(stats.scheduled), "cyan"),
        ("   throughput ", "bold"), (f"{_throughput(counters, started):,.0f} tasks/s", "magenta"),
    )  # fmt: skip
    return Group(progress, line)


async def run_demo(
    url: str, total: int, concurrency: int, console: Console, *, shared: bool = False
) -> str:
    """Enqueue the demo tasks, serve them, show progress; return the summary line.

    ``shared`` marks a broker that outlives the demo: its queue is deleted afterwards, tasks,
    counters and all.

    Raises:
        DemoTimeoutError: not everything finished within :data:`DEADLINE_S`.
    """
    counters = Counters()
    app = build_app(url, counters)
    queue = f"demo-{uuid.uuid4().hex[:8]}"  # never touches a real queue on a shared broker
    server = app.server(
        queues=[queue],
        concurrency=concurrency,
        retry_delay=lambda retried, error, task: timedelta(seconds=1),
        shutdown_timeout=2.0,
        poll_interval=0.2,
    )
    started = time.monotonic()
    inspector = AsyncInspector(url)
    # Open the store once before the worker and the client do, so a fresh SQLite file is
    # created by one connection rather than raced by three.
    await inspector.describe()
    serving = asyncio.create_task(server.serve(app.mux))
    tasks = app.tasks
    try:
        while not server.ready:
            if serving.done():
                serving.result()
                raise DemoTimeoutError("the demo worker stopped before it was ready")
            if time.monotonic() - started > DEADLINE_S:
                raise DemoTimeoutError("the demo worker did not become ready")
            await asyncio.sleep(0.02)
        quick = total - 3
        batch = [tasks["demo.resize_image"].task(i) for i in range(quick)]
        await app.async_client.enqueue_many(batch, queue=queue)
        await tasks["demo.flaky_upload"].options(queue=queue).aio.enqueue("reports/2026-q3.pdf")
        await tasks["demo.send_reminder"].options(queue=queue).aio.enqueue_in(SCHEDULE_IN, 7)
        await tasks["demo.charge_card"].options(queue=queue).aio.enqueue(1001)
        await _watch(inspector, queue, total, counters, console, started, serving)
    finally:
        await server.shutdown()
        await asyncio.gather(serving, return_exceptions=True)  # its error was surfaced above
        if shared:  # leave the user's broker as we found it (the temp file goes anyway)
            # A task the stopped worker could not give back keeps its lease (recovery handles
            # it later); refusing then must not hide the demo's own outcome.
            with contextlib.suppress(QueueInUseError):
                await inspector.delete_queue(queue, force=True)
        await inspector.close()
        await app.aclose()
    elapsed = time.monotonic() - started
    return (
        f"demo finished: {counters.done} tasks done, {counters.retried} retried, "
        f"1 archived, in {elapsed:.1f}s ({_throughput(counters, started):,.0f} tasks/s)"
    )


async def _watch(
    inspector: AsyncInspector,
    queue: str,
    total: int,
    counters: Counters,
    console: Console,
    started: float,
    serving: asyncio.Task[None],
) -> None:
    progress = Progress(
        TextColumn("[bold]conveyor demo[/]"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    )  # fmt: skip
    bar = progress.add_task("tasks", total=total)
    try:
        with Live(console=console, refresh_per_second=10, transient=False) as live:
            while True:
                stats = await inspector.queue_info(queue)
                progress.update(bar, completed=counters.done + stats.archived)
                live.update(_render(progress, stats, counters, started))
                waiting = stats.pending + stats.scheduled + stats.active + stats.retry
                if counters.done >= total - 1 and stats.archived >= 1 and waiting == 0:
                    return
                if serving.done():
                    serving.result()  # the worker died: surface its error
                    raise DemoTimeoutError("the demo worker stopped unexpectedly")
                if time.monotonic() - started > DEADLINE_S:
                    raise DemoTimeoutError(
                        f"demo did not finish within {DEADLINE_S:.0f}s "
                        f"({counters.done}/{total - 1} done, {waiting} waiting)"
                    )
                await asyncio.sleep(0.1)
    finally:
        if not console.is_terminal:
            # Rich leaves a non-terminal's last frame without a line end: the summary would
            # continue the progress line in a file that holds both streams.
            console.line()


def next_steps(broker: str | None) -> str:
    """What a newcomer runs after the demo: their own tasks, a worker, the inspection commands."""
    url = f" -b {broker}" if broker else ""
    return "\n".join(
        [
            "",
            "Next steps:",
            "  1. Write your tasks: README, Quick start (App(...), @app.task)",
            "  2. Run a worker on your tasks:  conveyor worker tasks:app",
            f"  3. Inspect the queues:          conveyor queue ls{url}",
            f"     and the failed tasks:        conveyor task ls default --state archived{url}",
        ]
    )


@click.command(
    epilog="""\b
Examples:
  conveyor demo
  conveyor demo --tasks 2000 --concurrency 32
  conveyor demo --broker redis://localhost:6379/0

Without --broker it uses a fresh SQLite file in a temporary directory, removed
afterwards, so every run starts clean."""
)
@click.option(
    "--tasks",
    "-n",
    "total",
    type=click.IntRange(4, 100_000),
    default=200,
    show_default=True,
    help="How many tasks to run.",
)
@click.option("--concurrency", "-c", type=click.IntRange(1, 1000), default=16, show_default=True)
@click.option(
    "--broker",
    "-b",
    metavar="URL",
    help="Run against this broker instead of a temporary SQLite file (uses its own random queue).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="critical",
    show_default=True,
)
def demo(total: int, concurrency: int, broker: str | None, log_level: str) -> None:
    """Run a small producer + worker example with a live progress display."""
    configure_logging(log_level)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="conveyor-demo-") as tmp:
        url = broker or f"sqlite:///{Path(tmp) / 'demo.db'}"
        try:
            summary = asyncio.run(
                run_demo(url, total, concurrency, console, shared=broker is not None)
            )
        except (ConveyorError, ValueError, OSError) as exc:
            if debugging():
                raise
            raise one_line(exc) from None
    click.echo(summary)
    click.echo(next_steps(broker))
