"""Registration: the worker's record in the broker's registry (``Inspector.list_workers``).

The record is written before the worker claims, refreshed by the lease heartbeat (see
:mod:`~conveyor.worker.heartbeat`) and removed after a clean shutdown. The heartbeat runs at least
every :data:`WORKER_BEAT_S`, and a record lasts three missed beats and a second, so a killed
worker leaves the list within ``3 * 10 + 1 = 31`` seconds at the most.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime
from importlib import metadata

from conveyor.brokers.protocol import Broker
from conveyor.brokers.workers import WorkerInfo, WorkerRegistry
from conveyor.errors import BrokerError
from conveyor.worker.config import WorkerConfig

__all__ = [
    "WORKER_BEAT_S",
    "beat_interval",
    "conveyor_version",
    "new_worker_id",
    "record_ttl",
    "register",
    "unregister",
    "worker_record",
]

logger = logging.getLogger(__name__)

WORKER_BEAT_S = 10.0
"""The longest time between refreshes of a worker's record (and lease renewals)."""


def beat_interval(renew_every_s: float) -> float:
    """How often the heartbeat runs: the lease renewal interval, at most :data:`WORKER_BEAT_S`."""
    return min(renew_every_s, WORKER_BEAT_S)


def record_ttl(beat_s: float) -> float:
    """How long a record outlives its last refresh: three missed beats, and a second of slack
    for a slow broker call."""
    return 3 * beat_s + 1.0


def conveyor_version() -> str:
    """The installed conveyor's version (``"unknown"`` when run from an uninstalled tree)."""
    try:
        return metadata.version("conveyor")
    except metadata.PackageNotFoundError:
        return "unknown"


def new_worker_id() -> str:
    """A fresh worker id, ``host:pid:random`` (unique per run, readable in listings)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def worker_record(worker_id: str, config: WorkerConfig) -> WorkerInfo:
    """This process's record as a worker with ``config``, started now."""
    return WorkerInfo(
        id=worker_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        queues=dict(config.queues),
        concurrency=config.concurrency,
        started_at=datetime.now(UTC),
        version=conveyor_version(),
    )


async def register(broker: Broker, record: WorkerInfo, ttl_s: float) -> bool:
    """Write the record before claiming; ``False`` if it failed (the heartbeat retries)."""
    if not isinstance(broker, WorkerRegistry):
        return True
    try:
        await broker.register_worker(record, ttl_s=ttl_s)
    except BrokerError as exc:
        logger.warning("could not register this worker (%s); the heartbeat will retry", exc)
        return False
    return True


async def unregister(broker: Broker, worker_id: str) -> bool:
    """Remove the record at a clean stop; ``False`` if it failed (it then lapses by itself)."""
    if not isinstance(broker, WorkerRegistry):
        return True
    try:
        await broker.unregister_worker(worker_id)
    except BrokerError as exc:
        logger.warning("could not remove this worker's record (%s); it will lapse", exc)
        return False
    return True
