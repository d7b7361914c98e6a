"""Producer processes racing on one store: nothing acknowledged is lost, one task per unique key.

Four processes enqueue at once, a third of their tasks on 30 shared unique keys. Afterwards the
store holds exactly the acknowledged tasks, and exactly one of them per key that was taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conveyor import Inspector, TaskState

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

PRODUCERS = 4
EACH = 300
KEYS = 30


def test_racing_producers_lose_nothing_and_share_unique_keys(url: str) -> None:
    script = Path(__file__).with_name("producer.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, f"p{n}", str(EACH), str(KEYS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PRODUCERS)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err[-3000:]
        reports.append(json.loads(out))

    acked = [task_id for r in reports for task_id in r["acked"]]
    unique = {task_id: key for r in reports for task_id, key in r["unique"].items()}
    assert len(set(acked)) == len(acked)
    refused = sum(r["refused"] for r in reports)
    assert refused > 0  # the keys were contended
    assert len(acked) + refused == PRODUCERS * EACH
    # One acknowledged task per unique key taken, whichever producer won it.
    assert sorted(Counter(unique.values()).values()) == [1] * len(set(unique.values()))
    stored: set[str] = set()
    with Inspector(url) as inspector:
        page = 1
        while tasks := inspector.list_tasks("default", TaskState.PENDING, page=page, size=500):
            stored.update(t.id for t in tasks)
            page += 1
    assert stored == set(acked)
