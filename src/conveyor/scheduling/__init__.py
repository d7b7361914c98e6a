"""Schedules: cron expressions and intervals whose fire times are enqueued exactly once.

``spec.py`` (when an entry fires), ``entry.py`` (what is defined and stored), ``plan.py`` (one
fire of a due entry), ``scheduler.py`` (the loop), ``admin.py`` (the inspector's operations).
The storage side is :mod:`conveyor.brokers.schedules`. See docs/scheduling.md.
"""

from __future__ import annotations
