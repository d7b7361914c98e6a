"""conveyor: an asyncio-native background task queue."""

from __future__ import annotations
