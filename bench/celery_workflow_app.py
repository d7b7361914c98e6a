"""The peer of ``bench/workflows.py``: the same two tasks as Celery tasks, Redis as broker and
result backend. Runs in a venv of its own (Celery is not a dependency of conveyor)::

    celery -A bench.celery_workflow_app worker --concurrency 8 --pool threads
"""

from __future__ import annotations

import os

from celery import Celery

URL = os.environ.get("BENCH_CELERY_URL", "redis://127.0.0.1:6379/9")
app = Celery("bench", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=16,
    result_expires=600,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.wf_add")
def add(a: int, b: int) -> int:
    """A chain step or chord member: ``a + b``."""
    return a + b


@app.task(name="bench.wf_total")
def total(values: list[int]) -> int:
    """A chord body: the sum of the members' results."""
    return sum(values)
