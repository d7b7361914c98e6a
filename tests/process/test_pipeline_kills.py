"""Pipelines under SIGKILL: real worker processes killed again and again while pipelines run.

Afterwards every pipeline has finished, and no step ran again once its progress was stored.
Each step appends ``<step> <task id> <token>`` to one file as it starts (O_APPEND, so the file's
order is the order steps started) and returns that fresh token in its dict. The result holds,
for each step, the token of the start whose output the pipeline stored; any start of that step
after it would be a step run again after its progress was stored, so the stored token must be
the step's last start. A later step starting before an earlier one's last start is caught too.
A reentrant step killed before its progress was stored may run again (at-least-once); a
non-reentrant one never does by itself: the task is archived as interrupted, and the test plays
the person who decides to run it again (``Inspector.run_task``), the only way such a step starts
twice.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import worker_app
from processes import Worker, spawn

from conveyor import Client, Inspector, PipelineStepState, TaskInfo, TaskState
from support import wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(120)]

PIPELINES = 40
KILLS = 8
ARGS = (
    "--lease", "1", "--recover-interval", "0.2", "--recover-delay", "0.2",
    "--concurrency", "4", "--max-crash-attempts", "1000",
)  # fmt: skip
ORDER = {name: i for i, name in enumerate(worker_app.PIPELINE_STEPS)}


def step_starts(trace_dir: Path) -> list[tuple[str, str, str]]:
    """(step, task id, token) per start, in start order; a line cut by a kill is skipped."""
    path = trace_dir / "steps.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        (p[0], p[1], p[2])
        for line in lines
        if len(p := line.split()) == 3 and p[0] in ORDER and len(p[2]) == 32
    ]


def finish_all(url: str, ids: set[str], reruns: Counter[str]) -> dict[str, TaskInfo]:
    """Wait for every pipeline to complete, re-running (as a person) those archived."""
    with Inspector(url) as inspector:

        def all_done() -> dict[str, TaskInfo] | None:
            infos = {i: inspector.get_task("default", i) for i in ids}
            for task_id, info in infos.items():
                if info.state is TaskState.ARCHIVED:
                    assert info.last_error is not None
                    assert "interrupted in non-reentrant step" in info.last_error, info
                    reruns[task_id] += 1
                    inspector.run_task("default", task_id)
            done = all(info.state is TaskState.COMPLETED for info in infos.values())
            return infos if done else None

        return wait_until(all_done, within=60.0, interval=0.2)


def test_killed_workers_never_rerun_a_step_whose_progress_was_stored(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    rng = random.Random(17)
    live = [spawn(workers, url, trace_dir, *ARGS) for _ in range(2)]
    with Client(url) as client:
        infos = [
            client.enqueue(
                worker_app.pipeline.task({"n": n}), retention=timedelta(hours=1), max_retry=100
            )
            for n in range(PIPELINES)
        ]
    ids = {info.id for info in infos}

    kills = 0
    while kills < KILLS:
        time.sleep(rng.uniform(0.2, 0.6))
        if len({t for step, t, _ in step_starts(trace_dir) if step == "commit"}) == PIPELINES:
            break  # everything reached its last step: nothing left to interrupt
        victim = live.pop(rng.randrange(len(live)))
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        kills += 1
        live.append(spawn(workers, url, trace_dir, *ARGS))

    reruns: Counter[str] = Counter()
    done = finish_all(url, ids, reruns)

    starts = step_starts(trace_dir)
    last_start: dict[tuple[str, str], int] = {}  # (task, step) -> position of its last start
    runs: Counter[tuple[str, str]] = Counter()
    position = {}
    for at, (step, task_id, token) in enumerate(starts):
        last_start[(task_id, step)] = at
        runs[(task_id, step)] += 1
        position[token] = at
    # The kills cut steps short: some started again (reentrant ones, or after a person's run).
    assert sum(runs.values()) > PIPELINES * len(ORDER)
    for task_id in ids:
        info = done[task_id]
        result = info.result
        assert isinstance(result, dict) and result.keys() == {"n", *ORDER}, result
        assert [(e.step, e.state) for e in info.result_log] == [
            (s, PipelineStepState.SUCCEEDED) for s in worker_app.PIPELINE_STEPS
        ]
        for step, index in ORDER.items():
            stored = position[result[step]]
            # The start whose output was stored is the step's last: it never ran again after.
            assert stored == last_start[(task_id, step)], (task_id, step, "ran again")
            if index > 0:  # and it started after the previous step's stored start
                assert stored > position[result[worker_app.PIPELINE_STEPS[index - 1]]]
        for step in worker_app.NON_REENTRANT:
            # Once, unless a person re-ran the task after it was interrupted inside the step.
            assert 1 <= runs[(task_id, step)] <= 1 + reruns[task_id], (task_id, step)
