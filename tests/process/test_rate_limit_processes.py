"""A rate limit holds for a fleet: four worker processes share one ``"20/s"`` bucket."""

from __future__ import annotations

import bisect
from pathlib import Path

import pytest
import worker_app
from processes import Worker, spawn, traces

from conveyor import Client
from support import wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]

RATE = 20  # worker_app.rated's rate_limit, "20/s"
TASKS = 300  # 15 s of work at the limit


def _times(trace_dir: Path, column: int) -> list[float]:
    lines = [
        line.split() for p in traces(trace_dir, "rated-") for line in p.read_text().splitlines()
    ]
    return sorted(float(parts[column]) for parts in lines if len(parts) == 2)


def _busiest_second(times: list[float]) -> int:
    """The most of ``times`` (sorted) in any half-open 1-second window."""
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


def test_four_workers_share_one_rate_limit(
    url: str, trace_dir: Path, workers: list[Worker]
) -> None:
    with Client(url) as client:
        client.enqueue_many([worker_app.rated.task(n) for n in range(TASKS)])
    for _ in range(4):
        spawn(workers, url, trace_dir, "--concurrency", "8")

    claims = wait_until(lambda: len(c := _times(trace_dir, 0)) == TASKS and c, within=60.0)

    # Claims by the broker's clock: the rate limit's own measure. After the first second (the
    # bucket's first burst), no 1-second window holds more claims than the rate, and the fleet
    # keeps up with it.
    steady = claims[bisect.bisect_left(claims, claims[0] + 1.0) :]
    seconds = int(steady[-1] - steady[0])  # whole seconds, as starts may come in bursts
    sustained = bisect.bisect_left(steady, steady[0] + seconds) / seconds
    assert _busiest_second(steady) <= RATE
    assert sustained >= 0.9 * RATE
    pids = {p.name.removeprefix("rated-").removesuffix(".txt") for p in traces(trace_dir, "rated-")}
    assert pids <= {str(w.pid) for w in workers}
    # Handler starts, by each worker's clock, trail their claims by the dispatch time, whose
    # jitter can move a start into the next window: shown, not asserted.
    starts = _times(trace_dir, 1)
    steady_starts = starts[bisect.bisect_left(starts, starts[0] + 1.0) :]
    print(
        f"busiest second: {_busiest_second(steady)} claims, "
        f"{_busiest_second(steady_starts)} starts; sustained {sustained:.2f}/s"
    )
