"""The pipeline progress document: round trip, and a clear error for anything malformed."""

from __future__ import annotations

import pytest

from conveyor.errors import PayloadError
from conveyor.progress import PipelineStepState, Progress, StepLog, result_log


def test_a_document_reads_back_as_written() -> None:
    progress = Progress(next=2, data={"a": [1, "é"]}, started=None)
    progress.set_entry(0, StepLog(step="one", state=PipelineStepState.SUCCEEDED, attempts=1))
    progress.set_entry(
        1, StepLog(step="two", state=PipelineStepState.FAILED, attempts=3, error="E: x")
    )
    progress.set_entry(
        1, StepLog(step="two", state=PipelineStepState.SUCCEEDED, attempts=4, error="E: x")
    )

    again = Progress.decode(progress.encode())

    assert again == progress
    assert result_log(progress.encode()) == tuple(progress.log)
    assert result_log(None) == ()
    assert Progress.decode(Progress().encode()) == Progress()


def test_a_missing_entry_is_a_fresh_running_one() -> None:
    assert Progress().entry(0, "first") == StepLog(step="first", state=PipelineStepState.RUNNING)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"v": 2, "next": 0, "log": []}',
        b'{"v": 1, "next": -1, "log": []}',
        b'{"v": 1, "next": true, "log": []}',
        b'{"v": 1, "next": 0, "log": {}}',
        b'{"v": 1, "next": 0, "data": [], "log": []}',
        b'{"v": 1, "next": 0, "started": "1", "log": []}',
        b'{"v": 1, "next": 0, "log": [1]}',
        b'{"v": 1, "next": 0, "log": [{"step": "a", "state": "odd", "attempts": 0}]}',
        b'{"v": 1, "next": 0, "log": [{"step": 1, "state": "failed", "attempts": 0}]}',
        b'{"v": 1, "next": 0, "log": [{"step": "a", "state": "failed", "attempts": 0, '
        b'"error": 5}]}',
        b"[" * 100_000,
    ],
)
def test_a_malformed_document_raises_payload_error(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        Progress.decode(raw)
