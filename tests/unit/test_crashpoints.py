"""The CONVEYOR_CRASHPOINTS parser (the kills themselves: tests/process/test_crash_points.py)."""

from __future__ import annotations

import pytest

from conveyor import Client, Server, Task
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


def test_a_bad_value_fails_the_worker_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read when a Server is created, not on import: producers and the CLI never see it.
    monkeypatch.setenv(crashpoints.ENV_VAR, "bogus:1")
    with Client("memory://") as client:
        client.enqueue(Task("a.b"))
    with pytest.raises(ConfigError, match="CONVEYOR_CRASHPOINTS"):
        Server("memory://")
    monkeypatch.setenv(crashpoints.ENV_VAR, "after_ack:0.5")
    try:
        Server("memory://")
        assert crashpoints.armed() == {"after_ack": 0.5}
    finally:
        monkeypatch.delenv(crashpoints.ENV_VAR)
        crashpoints.arm_from_env()
    assert crashpoints.armed() == {}
