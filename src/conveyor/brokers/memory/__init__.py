"""The in-process memory backend: the readable specification of the broker protocol.

``broker.py`` holds the task lifecycle; each further concern (workflows, schedules, limits, the
worker registry) lives in a module of its own beside it.
"""

from __future__ import annotations

from conveyor.brokers.memory.broker import MemoryBroker

__all__ = ["MemoryBroker"]
