"""The CONVEYOR_CRASHPOINTS parser (the kills themselves: tests/process/test_crash_points.py)."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigError
from conveyor.worker import crashpoints


def test_parses_points_and_rates() -> None:
    assert crashpoints.parse("after_claim:0.5, before_ack:1,,") == {
        "after_claim": 0.5,
        "before_ack": 1.0,
    }
    assert crashpoints.parse("") == {}


@pytest.mark.parametrize("spec", ["nowhere:0.1", "after_claim:2", "after_claim:x", "after_claim"])
def test_rejects_unknown_points_and_bad_rates(spec: str) -> None:
    with pytest.raises(ConfigError, match="CONVEYOR_CRASHPOINTS"):
        crashpoints.parse(spec)


def test_unarmed_in_a_normal_run() -> None:
    assert crashpoints.armed() == {}
    crashpoints.crashpoint("after_claim")  # a no-op: this process is still here
