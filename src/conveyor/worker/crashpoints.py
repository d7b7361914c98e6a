"""Test-only crash points: a fault test can make a worker kill itself at chosen steps.

``CONVEYOR_CRASHPOINTS="after_claim:0.02,before_ack:0.05"`` makes the worker SIGKILL itself with
that probability each time it passes the named point, so a test can check that no step of the
claim → run → acknowledge path loses a task or accepts a stale result. Unset (as it always is in
production) every point costs one lookup in an empty dict. The variable is read when a worker
``Server`` is created (:func:`arm_from_env`), not on import, so a bad value fails that worker
with a ``ConfigError`` and never a producer or the CLI. The worker logs a warning at start when
any point is armed, so it is never left on by accident.

Points: ``after_claim`` (tasks leased, none started), ``before_handler``, ``after_handler``
(result computed, not recorded), ``before_ack`` and ``after_ack`` (around the completion
call), ``before_retry`` (failure not yet recorded), ``before_renew`` (lease renewal), and in a
worker's scheduler on Redis ``after_schedule_fire`` (a workflow entry's fire recorded, its
workflows not yet created).
"""

from __future__ import annotations

import os
import random
import signal

from conveyor.errors import ConfigError

ENV_VAR = "CONVEYOR_CRASHPOINTS"
POINTS = frozenset(
    {
        "after_claim",
        "after_schedule_fire",
        "before_handler",
        "after_handler",
        "before_ack",
        "after_ack",
        "before_retry",
        "before_renew",
    }
)


def parse(spec: str) -> dict[str, float]:
    """``"name:rate,..."`` to ``{name: rate}``.

    Raises:
        ConfigError: an unknown point, or a rate that is not a number in [0, 1].
    """
    rates: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rate = item.partition(":")
        if name not in POINTS:
            known = ", ".join(sorted(POINTS))
            raise ConfigError(f"{ENV_VAR}: unknown crash point {name!r} (known: {known})")
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{ENV_VAR}: rate of {name!r} must be in [0, 1], got {rate!r}")
        rates[name] = value
    return rates


_RATES: dict[str, float] = {}


def arm_from_env() -> None:
    """Arm the points ``CONVEYOR_CRASHPOINTS`` names (none when it is unset or empty).

    Raises:
        ConfigError: the variable names an unknown point or a bad rate.
    """
    global _RATES
    _RATES = parse(os.environ.get(ENV_VAR, ""))


def armed() -> dict[str, float]:
    """The armed points and their rates (empty in production)."""
    return dict(_RATES)


def crashpoint(name: str) -> None:
    """Die here, at once and without cleanup (SIGKILL), if ``name`` is armed and the dice say so."""
    rate = _RATES.get(name)
    if rate is not None and random.random() < rate:
        os.kill(os.getpid(), signal.SIGKILL)
