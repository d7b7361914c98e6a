"""The App of the scheduled-workflow kill test: a two-step chain fired every second, its steps in
two queues that no worker serves, so every fire's first step stays there to be counted."""

from __future__ import annotations

from conveyor import App, chain

app = App("memory://unused-the-tests-pass-broker")


@app.task(name="proc.fetch", queue="swf-a")
def fetch() -> None:
    """Never run in the test (no worker serves its queue)."""


@app.task(name="proc.store", queue="swf-b")
def store() -> None:
    """Never run in the test."""


app.schedule(chain(fetch.si(), store.si()), every=1, name="proc.flow")
