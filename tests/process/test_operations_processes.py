"""Live workers and operations in real worker processes: kill -9, JSON logs, /metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
import worker_app
from processes import Worker, spawn
from prometheus_client.parser import text_string_to_metric_families

from conveyor import Client, Inspector
from support import wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]

# A 3 s lease: the worker refreshes its record every second, and a record lasts three missed
# beats and a second (4 s), so a killed worker leaves the list quickly, and a busy machine does
# not make a live one lapse.
SHORT_BEATS = ("--lease", "3")


def test_a_killed_worker_leaves_the_list_and_a_stopped_one_at_once(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    killed = spawn(workers, url, trace_dir, *SHORT_BEATS)
    stopped = spawn(workers, url, trace_dir, *SHORT_BEATS, "-q", "critical=6", "-q", "default=3")
    with Inspector(url) as inspector:
        listed = {w.pid: w for w in inspector.list_workers()}
        assert set(listed) == {killed.pid, stopped.pid}
        assert dict(listed[stopped.pid].queues) == {"critical": 6, "default": 3}

        os.kill(killed.pid, signal.SIGKILL)
        assert killed.proc.wait(timeout=10) == -signal.SIGKILL
        wait_until(lambda: [w.pid for w in inspector.list_workers()] == [stopped.pid], within=15)

        stopped.proc.send_signal(signal.SIGTERM)
        assert stopped.proc.wait(timeout=20) == 0
        assert inspector.list_workers() == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _samples(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_json_logs_carry_the_task_and_metrics_are_served(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    port = _free_port()
    worker = spawn(workers, url, trace_dir, "--log-format", "json", "--metrics-port", str(port))
    with Client(url) as client:
        info = client.enqueue(worker_app.log_line.task("hello"))

    def handler_line() -> dict[str, object] | None:
        for line in list(worker.lines):
            record = json.loads(line)  # every line is one JSON object
            if record["logger"] == "user.handler":
                return record  # type: ignore[no-any-return]
        return None

    record = wait_until(handler_line, within=15)
    assert record["message"] == "handler says hello"
    assert (record["task_id"], record["task_type"], record["queue"], record["attempt"]) == (
        info.id,
        "proc.log_line",
        "default",
        1,
    )
    labels = json.dumps({"queue": "default", "task_type": "proc.log_line"}, sort_keys=True)
    samples = wait_until(
        lambda: (s := _samples(port)).get("conveyor_tasks_processed_total" + labels) == 1 and s,
        within=15,
    )
    assert samples.get("conveyor_tasks_failed_total" + labels, 0) == 0  # no failure: no child
    assert samples["conveyor_workers{}"] == 1
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=20) == 0
    worker.stop()
    assert all(json.loads(line) for line in worker.lines)
