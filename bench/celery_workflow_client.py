"""Times Celery's chord and chain (run by ``bench/workflows.py`` in the Celery venv).

``python -m bench.celery_workflow_client MEMBERS STEPS [REPEAT]`` prints a line per run of each
canvas, ``chord <seconds>`` and ``chain <seconds>``, each from the canvas's apply_async to its
result (each canvas run REPEAT times, default 1).
"""

from __future__ import annotations

import sys
import time

from bench.celery_workflow_app import add, total
from celery import chain, chord


def main() -> None:
    members, steps = int(sys.argv[1]), int(sys.argv[2])
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    add.delay(0, 0).get(timeout=60)  # workers up and connected before timing
    for _ in range(repeat):
        start = time.perf_counter()
        result = chord([add.s(i, 1) for i in range(members)], total.s()).apply_async()
        assert result.get(timeout=600) == sum(range(1, members + 1))
        print(f"chord {time.perf_counter() - start:.4f}", flush=True)
    for _ in range(repeat):
        start = time.perf_counter()
        result = chain(add.s(0, 1), *[add.s(1) for _ in range(steps - 1)]).apply_async()
        assert result.get(timeout=600) == steps
        print(f"chain {time.perf_counter() - start:.4f}", flush=True)


if __name__ == "__main__":
    main()
