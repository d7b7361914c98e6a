"""Times Celery's chord and chain (run by ``bench/workflows.py`` in the Celery venv).

``python -m bench.celery_workflow_client MEMBERS STEPS`` prints two lines: ``chord <seconds>``
and ``chain <seconds>``, each from the canvas's apply_async to its result.
"""

from __future__ import annotations

import sys
import time

from bench.celery_workflow_app import add, total
from celery import chain, chord


def main() -> None:
    members, steps = int(sys.argv[1]), int(sys.argv[2])
    add.delay(0, 0).get(timeout=60)  # workers up and connected before timing
    start = time.perf_counter()
    result = chord([add.s(i, 1) for i in range(members)], total.s()).apply_async()
    assert result.get(timeout=600) == sum(range(1, members + 1))
    print(f"chord {time.perf_counter() - start:.4f}", flush=True)
    start = time.perf_counter()
    result = chain(add.s(0, 1), *[add.s(1) for _ in range(steps - 1)]).apply_async()
    assert result.get(timeout=600) == steps
    print(f"chain {time.perf_counter() - start:.4f}", flush=True)


if __name__ == "__main__":
    main()
