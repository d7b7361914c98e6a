"""decode_history: the stored JSON list of attempts, read without ever failing on bad data."""

from __future__ import annotations

from datetime import UTC, datetime

from conveyor.brokers.history import HISTORY_ERROR_CHARS, decode_history, history_error
from conveyor.message import AttemptRecord


def test_entries_with_seconds_or_microsecond_strings_decode() -> None:
    raw = b'[[1,1765000000.5,"a"],[2,"1765000001250000","b"]]'

    assert decode_history(raw) == (
        AttemptRecord(attempt=1, failed_at=datetime.fromtimestamp(1765000000.5, UTC), error="a"),
        AttemptRecord(attempt=2, failed_at=datetime.fromtimestamp(1765000001.25, UTC), error="b"),
    )


def test_damaged_data_gives_what_can_be_read() -> None:
    assert decode_history(None) == ()
    assert decode_history(b"not json") == ()
    assert decode_history(b'{"a": 1}') == ()
    kept = decode_history(b'[[1,"x","bad time"],[2],"junk",[3,10,null],[4,10,"ok \xff"]]')
    assert [(r.attempt, r.error) for r in kept] == [(4, "ok \ufffd")]


def test_history_error_keeps_the_first_characters() -> None:
    assert history_error("short") == "short"
    assert history_error("é" * (HISTORY_ERROR_CHARS + 1)) == "é" * HISTORY_ERROR_CHARS
