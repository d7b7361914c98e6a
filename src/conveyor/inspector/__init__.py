"""Looking at and steering stored tasks: list, inspect, re-run, archive, delete, pause.

``AsyncInspector`` is the async core; ``Inspector`` is its sync facade (same method names). Both
talk to storage only through the :class:`~conveyor.brokers.protocol.Broker` protocol.

Example::

    with Inspector("sqlite:///conveyor.db") as inspector:
        for queue in inspector.queues():
            print(inspector.queue_info(queue))
        inspector.run_all_tasks("default", "archived")
"""

from __future__ import annotations

from conveyor.inspector.base import MAX_PAGE_SIZE as MAX_PAGE_SIZE
from conveyor.inspector.core import AsyncInspector
from conveyor.inspector.sync import Inspector

__all__ = ["AsyncInspector", "Inspector"]
