"""The dashboard's state, shared by its pages: the inspector and the settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from conveyor.brokers.protocol import Broker
from conveyor.config import redact_url
from conveyor.inspector import AsyncInspector


@dataclass(slots=True, kw_only=True)
class Dashboard:
    """One dashboard app: its broker (opened on first use) and whether actions are allowed."""

    broker: str | Broker
    read_only: bool = False
    _inspector: AsyncInspector | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def label(self) -> str:
        """The broker's URL without its password, or its class name for an instance."""
        if isinstance(self.broker, str):
            return redact_url(self.broker)
        return type(self.broker).__name__

    @staticmethod
    def of(connection: HTTPConnection) -> Dashboard:
        """The dashboard serving this request."""
        found: Dashboard = connection.app.state.dashboard
        return found

    async def inspector(self) -> AsyncInspector:
        """The inspector, opening the broker on first use.

        Opened lazily, in the serving event loop, rather than at ``create_app``: an app mounted
        inside another one never sees its own lifespan events, and a Redis client must be made
        in the loop that uses it.
        """
        if self._inspector is None:
            async with self._lock:
                if self._inspector is None:
                    self._inspector = AsyncInspector(self.broker)
        return self._inspector

    async def close(self) -> None:
        """Close the broker if this dashboard opened it from a URL."""
        if self._inspector is not None:
            inspector, self._inspector = self._inspector, None
            await inspector.close()
