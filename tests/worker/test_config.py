"""Server options: validation, conversion to seconds, defaults."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.errors import ConfigError, InvalidNameError
from conveyor.worker.config import WorkerConfig, default_concurrency
from conveyor.worker.server import Server


def test_defaults() -> None:
    server = Server("memory://defaults")
    config = server.config
    assert config.concurrency == default_concurrency() >= 10
    assert config.queues == (("default", 1),)
    assert config.lease_s == 30.0
    assert config.renew_every_s == pytest.approx(10.0)
    assert config.shutdown_timeout_s == 8.0
    assert config.sync_cancel_grace_s == 1.0
    assert config.max_payload_bytes == 1024 * 1024
    assert not config.strict_priority


def test_timedeltas_become_seconds_and_queue_forms_normalise() -> None:
    server = Server(
        "memory://opts",
        queues=["a", "b"],
        lease=timedelta(minutes=1),
        shutdown_timeout=timedelta(seconds=3),
        sync_cancel_grace=timedelta(milliseconds=250),
        renew_interval=timedelta(seconds=5),
    )
    assert server.config.queues == (("a", 1), ("b", 1))
    assert server.config.lease_s == 60.0
    assert server.config.shutdown_timeout_s == 3.0
    assert server.config.sync_cancel_grace_s == 0.25
    assert Server("memory://zero", sync_cancel_grace=0).config.sync_cancel_grace_s == 0.0
    assert server.config.renew_every_s == 5.0
    assert Server("memory://one", queues="solo").config.queue_names == ("solo",)
    weighted = Server("memory://w", queues={"critical": 6, "default": 3})
    assert weighted.config.queues == (("critical", 6), ("default", 3))


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"queues": {}},
        {"queues": {"a": 0}},
        {"queues": {"a": 1.5}},
        {"queues": {"a": True}},
        {"lease": 0},
        {"lease": -1},
        {"lease": "30"},
        {"lease": 3, "renew_interval": 3},
        {"shutdown_timeout": -1},
        {"sync_cancel_grace": -1},
        {"sync_cancel_grace": timedelta(seconds=-1)},
        {"sync_cancel_grace": "1s"},
        {"max_payload_bytes": 0},
        {"recover_interval": 0},
        {"poll_interval": 0},
        {"retry_delay": "exponential"},
        {"error_handler": 42},
    ],
)
def test_invalid_options_raise_config_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Server("memory://bad", **options)  # type: ignore[arg-type]


def test_bad_queue_name_is_refused() -> None:
    with pytest.raises(InvalidNameError):
        Server("memory://bad", queues=["has space"])
    with pytest.raises(ConfigError):
        Server("memory://bad", queues=["a", "a"])


def test_a_negative_sync_cancel_grace_is_refused_by_the_config_too() -> None:
    with pytest.raises(ConfigError, match="sync_cancel_grace"):
        WorkerConfig(sync_cancel_grace_s=-0.5)


def test_config_is_frozen() -> None:
    config = WorkerConfig()
    with pytest.raises(AttributeError):
        config.lease_s = 1.0  # type: ignore[misc]
