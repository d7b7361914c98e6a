"""The soak run's task: served by ``python -m conveyor worker bench.soak_tasks:app``.

``soak.run(n, kind, ms)`` writes ``s<n>`` when an attempt starts and ``e<n>`` when it ends, one
line per ``os.write`` to ``$SOAK_DIR/events-<pid>.txt`` (``O_APPEND``: whole lines, and a line
written before a SIGKILL is kept), so the driver (``bench/soak.py``) counts starts and ends
exactly per task number ``n``. Kinds:

- ``noop``: nothing else;
- ``sleep``: ``asyncio.sleep(ms / 1000)`` between the two lines;
- ``fail``: the first attempt raises after its ``s`` line (no ``e``); the retry succeeds.
"""

from __future__ import annotations

import asyncio
import os

from conveyor import App, current_context

app = App("memory://unused-the-soak-passes-broker")

_fd: int | None = None


def _log(line: str) -> None:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["SOAK_DIR"], f"events-{os.getpid()}.txt")
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, line.encode("ascii"))


@app.task(name="soak.run")
async def run(n: int, kind: str = "noop", ms: int = 0) -> None:
    """One soak task: log its start, behave as ``kind`` says, log its end."""
    _log(f"s{n}\n")
    if kind == "sleep":
        await asyncio.sleep(ms / 1000)
    elif kind == "fail" and current_context().retry_count == 0:
        raise RuntimeError(f"soak task {n} fails its first attempt")
    _log(f"e{n}\n")
