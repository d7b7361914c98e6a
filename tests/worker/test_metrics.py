"""Prometheus metrics: a scrape during a run matches what the worker did."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from conveyor.brokers.protocol import Broker
from conveyor.inspector import Inspector
from conveyor.message import JSONValue, Task, TaskState
from conveyor.metrics import Metrics
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from support import eventually
from worker.harness import enqueue, fast, serving, wait_for_state


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:port/metrics, keyed by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_scrape_during_a_run_counts_what_the_worker_did(
    broker_url: str, url_broker: Broker
) -> None:
    gate = asyncio.Event()

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        if task.payload == "block":
            await gate.wait()
        if task.payload == "fail":
            raise RuntimeError("boom")
        return None

    server = Server(broker_url, **fast())
    metrics = Metrics()
    metrics.observe(server.signals)
    metrics.watch_server(server)
    inspector = Inspector(broker_url)
    metrics.watch_queues(inspector)
    http = metrics.serve(0)
    try:
        async with serving(server, handler):
            for _ in range(5):
                await enqueue(url_broker, "ok:job", "ok")
            failing = [await enqueue(url_broker, "bad:job", "fail", max_retry=1) for _ in range(3)]
            for message in failing:
                await wait_for_state(url_broker, message, TaskState.ARCHIVED)
            blocked = await enqueue(url_broker, "slow:job", "block")
            await wait_for_state(url_broker, blocked, TaskState.ACTIVE)
            await enqueue(url_broker, "ok:job", "ok", queue="idle")

            async def settled() -> bool:
                return server.stats.succeeded == 5

            await eventually(settled)
            samples = await asyncio.to_thread(scrape, http.port)
            gate.set()
            stats = server.stats
    finally:
        http.close()
        inspector.close()

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    ok = {"queue": "default", "task_type": "ok:job"}
    bad = {"queue": "default", "task_type": "bad:job"}
    assert (stats.succeeded, stats.failed, stats.retried, stats.archived) == (5, 6, 3, 3)
    assert value("conveyor_tasks_processed_total", **ok) == 5
    assert value("conveyor_tasks_processed_total", **bad) == 6
    assert value("conveyor_tasks_failed_total", **ok) == 0
    assert value("conveyor_tasks_failed_total", **bad) == stats.failed
    assert value("conveyor_tasks_retried_total", **bad) == stats.retried
    assert value("conveyor_tasks_archived_total", **bad) == stats.archived
    assert value("conveyor_task_duration_seconds_count", **bad) == 6
    assert value("conveyor_tasks_active") == 1
    assert value("conveyor_queue_size", queue="default", state="archived") == 3
    assert value("conveyor_queue_size", queue="default", state="active") == 1
    assert value("conveyor_queue_size", queue="idle", state="pending") == 1
    assert value("conveyor_queue_latency_seconds", queue="idle") >= 0
    assert ("conveyor_queue_latency_seconds", (("queue", "idle"),)) in samples
    assert value("conveyor_workers") == 1
    # Daily totals: all 11 attempts, unless the run straddled midnight UTC.
    assert value("conveyor_queue_processed_today", queue="default") in range(12)
    assert value("conveyor_queue_failed_today", queue="default") in range(7)
    assert ("conveyor_queue_processed_today", (("queue", "default"),)) in samples
    assert value("conveyor_broker_up") == 1
    assert ("conveyor_broker_errors_total", ()) in samples
    assert ("conveyor_lease_recoveries_total", ()) in samples
    # The Grafana dashboard and the docs' table name only metrics that exist.
    names = {name for name, _ in samples}
    docs = Path(__file__).parents[2] / "docs"
    dashboard = set(re.findall(r"conveyor_\w+", (docs / "grafana-dashboard.json").read_text()))
    table = set(re.findall(r"^\| `(conveyor_\w+)`", (docs / "metrics.md").read_text(), re.M))
    assert dashboard <= names
    assert table - {"conveyor_task_duration_seconds"} <= names
    assert "conveyor_task_duration_seconds_bucket" in names
