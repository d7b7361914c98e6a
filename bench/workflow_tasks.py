"""The conveyor tasks of ``bench/workflows.py``: served by
``python -m conveyor worker bench.workflow_tasks:app --broker URL``."""

from __future__ import annotations

import os

from conveyor import App

app = App(os.environ.get("BENCH_BROKER_URL", "sqlite:///bench.db"))


@app.task(name="bench.wf_add")
def add(a: int, b: int) -> int:
    """A chain step or chord member: ``a + b``."""
    return a + b


@app.task(name="bench.wf_total")
def total(values: list[int]) -> int:
    """A chord body: the sum of the members' results."""
    return sum(values)
