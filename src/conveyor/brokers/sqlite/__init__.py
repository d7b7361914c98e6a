"""The embedded SQLite broker: one file, shared by every process on the machine.

See :class:`SqliteBroker` for durability settings and the URL form.
"""

from __future__ import annotations

from conveyor.brokers.sqlite.broker import SqliteBroker, Synchronous

__all__ = ["SqliteBroker", "Synchronous"]
