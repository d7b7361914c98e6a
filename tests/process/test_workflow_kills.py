"""Workflows survive SIGKILLed workers: a 200-member chord and a 20-step chain, run by worker
processes that kill themselves at random points (after a claim, around the handler, before and
after the step's settlement) and are killed by the test as well, then respawned.

Afterwards both workflows succeeded with the right results, and the chord body was enqueued
exactly once: every run of it logged is the same task, each at a different attempt (a second
enqueue would start again at attempt 0), and a run was repeated only after a kill.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import worker_app
from processes import Worker

from conveyor import App, Inspector, StepState, WorkflowState, chain, chord

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

CRASHPOINTS = "after_claim:0.01,before_handler:0.005,before_ack:0.01,after_ack:0.01"
ARGS = ("--concurrency", "4", "--recover-interval", "0.2", "--max-crash-attempts", "1000")
MEMBERS = 200
STEPS = 20


@pytest.fixture
def cluster(redis_cluster: list[str]) -> list[str]:
    """The session's 3-node Redis Cluster (tests/conftest.py)."""
    return redis_cluster


def test_workflows_survive_killed_workers(url: str, trace_dir: Path) -> None:
    survive_kills(url, trace_dir)


@pytest.mark.redis
def test_workflows_survive_killed_workers_on_cluster(cluster: list[str], trace_dir: Path) -> None:
    namespace = f"wfk{uuid.uuid4().hex[:8]}"  # a private test cluster: left for its teardown
    url = f"redis+cluster://{cluster[0]},{cluster[1]}?namespace={namespace}"
    # A settlement there is several round trips, and a worker takes longer to connect: longer
    # leases and fewer kills by the test, so the workers get work done between kills.
    survive_kills(url, trace_dir, lease="3", kill_every=3.0)


def stuck(inspector: Inspector, *workflow_ids: str) -> str:
    """What the workflows still wait for: their steps not succeeded, with their tasks' state."""
    lines = []
    for workflow_id in workflow_ids:
        info = inspector.get_workflow(workflow_id)
        left = [
            f"{s.position}={s.state.value}/{s.task_state}"
            for s in info.steps
            if s.state is not StepState.SUCCEEDED
        ]
        lines.append(f"{workflow_id} {info.state.value}: {', '.join(left[:20])}")
    return "; ".join(lines)


def survive_kills(url: str, trace_dir: Path, *, lease: str = "1", kill_every: float = 1.5) -> None:
    """Run both workflows under killed workers; check their results and the body's runs."""
    app = App(url)
    add = app.task(worker_app.wf_add.fn, name="proc.wf_add", max_retry=100)
    body = app.task(worker_app.wf_body.fn, name="proc.wf_body", max_retry=100)
    big = app.enqueue_workflow(chord([add.s(i, 1) for i in range(MEMBERS)], body.s()))
    long = app.enqueue_workflow(chain(add.s(0, 1), *[add.s(1) for _ in range(STEPS - 1)]))
    app.close()

    # Steps of 100 ms: both workflows take a few seconds, so the test's own kills (a worker up
    # for kill_every seconds) and the crash points land while they run (a chain's steps follow
    # each other in one slot, each continued by its settlement, with no claim in between).
    env = {"CONVEYOR_CRASHPOINTS": CRASHPOINTS, "CONVEYOR_TEST_STEP_S": "0.1"}
    args = (*ARGS, "--lease", lease)
    running = [Worker(url, trace_dir, *args, env=env) for _ in range(2)]
    ready_at: list[float | None] = [None, None]
    kills = 0
    deadline = time.monotonic() + 200
    next_kill = time.monotonic() + 1.0
    try:
        with Inspector(url) as inspector:

            def done() -> bool:
                states = {inspector.get_workflow(w.id).state for w in (big, long)}
                assert WorkflowState.FAILED not in states
                return states == {WorkflowState.SUCCEEDED}

            while not done():
                assert time.monotonic() < deadline, stuck(inspector, big.id, long.id)
                victim, now = kills % 2, time.monotonic()
                # The test's own kill, besides the crash points. A worker gets kill_every seconds
                # after it is ready, so a loaded machine's slow start-ups cannot starve the run.
                for i, worker in enumerate(running):
                    if ready_at[i] is None and any("worker ready" in x for x in worker.lines):
                        ready_at[i] = now
                up_since = ready_at[victim]
                if now >= next_kill and up_since is not None and now - up_since >= kill_every:
                    os.kill(running[victim].pid, signal.SIGKILL)
                    next_kill = now + kill_every
                for i, worker in enumerate(running):
                    code = worker.proc.poll()
                    if code is None:
                        continue
                    assert code == -signal.SIGKILL, "".join(worker.lines)[-3000:]
                    kills += 1
                    worker.stop()
                    running[i] = Worker(url, trace_dir, *args, env=env)
                    ready_at[i] = None
                time.sleep(0.05)  # supervising child processes: poll them, there is no event
            assert inspector.get_workflow(big.id).result == sum(range(1, MEMBERS + 1))
            assert inspector.get_workflow(long.id).result == STEPS
    finally:
        for worker in running:
            worker.stop()

    assert kills > 0, "no worker was killed: the test tested nothing"
    runs = [
        tuple(line.split())
        for path in trace_dir.glob("bodies-*.txt")
        for line in path.read_text().splitlines()
    ]
    assert {task_id for task_id, _ in runs} == {big.steps[-1].task_id}
    attempts = [int(attempt) for _, attempt in runs]
    assert len(attempts) == len(set(attempts)), f"the chord body was enqueued twice: {runs}"
    print(f"kills: {kills}, chord body runs: {len(runs)}")
