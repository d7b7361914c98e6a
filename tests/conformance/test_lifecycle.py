"""Broker lifecycle: describe, capabilities, idempotent close."""

from __future__ import annotations

import pytest

from conformance.factories import QUEUE, enqueue_one
from conveyor.brokers.protocol import Broker, BrokerInfo, Capabilities
from conveyor.errors import BrokerUnavailableError


async def test_describe_names_the_backend(broker: Broker) -> None:
    info = await broker.describe()

    assert isinstance(info, BrokerInfo)
    assert info.backend in ("memory", "sqlite", "redis")
    assert info.location and info.durability


async def test_capabilities_are_declared(broker: Broker) -> None:
    assert isinstance(broker.capabilities, Capabilities)


async def test_close_is_idempotent(broker: Broker) -> None:
    await broker.close()
    await broker.close()  # the fixture closes it once more afterwards

    assert isinstance(broker, Broker)


async def test_calls_after_close_raise_broker_unavailable(broker: Broker) -> None:
    await enqueue_one(broker)
    await broker.close()
    await broker.close()  # idempotent
    with pytest.raises(BrokerUnavailableError, match="closed"):
        await enqueue_one(broker)
    with pytest.raises(BrokerUnavailableError, match="closed"):
        await broker.queue_stats(QUEUE)
    with pytest.raises(BrokerUnavailableError, match="closed"):
        await broker.claim([QUEUE], limit=1, lease_s=30)
