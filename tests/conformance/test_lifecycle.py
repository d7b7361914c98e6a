"""Broker lifecycle: describe, capabilities, idempotent close."""

from __future__ import annotations

from conveyor.brokers.protocol import Broker, BrokerInfo, Capabilities


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
