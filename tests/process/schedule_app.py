"""The App of the schedule process test: one entry firing every second into a queue that no
worker serves, so every fire's task stays there to be counted."""

from __future__ import annotations

from conveyor import App

app = App("memory://unused-the-tests-pass-broker")


@app.periodic(every=1, name="proc.tick", queue="ticks")
def tick() -> None:
    """Never run in the test (no worker serves its queue)."""
