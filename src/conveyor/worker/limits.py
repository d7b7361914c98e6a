"""Writing the limits an app declares (``@app.task(rate_limit=..., max_concurrency=...)``) to
the broker.

A server does it once, when it starts serving: the code's limits then hold for every worker and
producer sharing the broker. A declared limit replaces what the broker held for that task type
(an Inspector change lasts until the next worker start); a type that declares none keeps
whatever the Inspector set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from conveyor.brokers.limits import FlowControl, TaskLimits
from conveyor.brokers.protocol import Broker

logger = logging.getLogger(__name__)


async def write_task_limits(broker: Broker, limits: Mapping[str, TaskLimits]) -> None:
    """Store each task type's declared limits in ``broker``.

    Raises:
        ConfigError: limits are declared and the broker keeps none.
    """
    if not limits:
        return
    if not isinstance(broker, FlowControl):
        from conveyor.errors import ConfigError

        raise ConfigError(f"{type(broker).__name__} does not keep flow-control limits")
    for task_type, declared in sorted(limits.items()):
        if declared.rate is not None:
            await broker.set_rate_limit(task_type, declared.rate)
            logger.info("rate limit of %s: %s", task_type, declared.rate)
        if declared.max_concurrency is not None:
            await broker.set_task_concurrency(task_type, declared.max_concurrency)
            logger.info("concurrency limit of %s: %d", task_type, declared.max_concurrency)
