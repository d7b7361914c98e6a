"""The Redis broker: standalone, TLS, unix socket, Sentinel and Cluster, via redis-py asyncio."""

from __future__ import annotations

from conveyor.brokers.redis.broker import RedisBroker

__all__ = ["RedisBroker"]
