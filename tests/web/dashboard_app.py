"""The App the dashboard's browser tests run in a real ``conveyor worker`` subprocess."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from conveyor import App, Retry, SkipRetry

app = App("memory://unused-the-tests-pass-broker")


@app.task(name="demo.ok")
def ok(note: str) -> dict[str, str]:
    """Succeed, returning what it was given."""
    return {"echo": note}


@app.task(name="demo.flaky")
def flaky(note: str) -> None:
    """Fail and wait an hour in RETRY (long enough for the test to act on it)."""
    raise Retry(f"upstream said no to {note}", delay=timedelta(hours=1))


@app.task(name="demo.doomed")
def doomed(note: str) -> None:
    """Fail for good: archived at once."""
    raise SkipRetry(f"cannot handle {note}")


@app.task(name="demo.hang")
async def hang(note: str) -> None:
    """Stay ACTIVE until the worker is killed."""
    await asyncio.sleep(3600)
