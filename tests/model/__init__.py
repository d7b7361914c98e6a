"""Model-based tests (Hypothesis state machines) against real brokers.

The Redis set-up the state machines share lives here: each example opens a broker under a
namespace of its own and deletes that namespace when the example ends; the ``_redis_up``
fixture (``conftest.py`` beside this file) skips, or fails in CI, when Redis is not there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from conftest import REDIS_URL
from conveyor.brokers.protocol import Broker
from support import delete_namespace


def redis_broker(prefix: str, cleanup: list[Callable[[], None]]) -> Broker:
    """A Redis broker under a fresh namespace ``<prefix>-<random>``, deleted by ``cleanup``."""
    from conveyor.brokers.redis import RedisBroker

    namespace = f"{prefix}-{uuid.uuid4().hex[:12]}"
    cleanup.append(lambda: asyncio.run(delete_namespace(REDIS_URL, namespace)))
    return RedisBroker.from_url(f"{REDIS_URL}?namespace={namespace}")
