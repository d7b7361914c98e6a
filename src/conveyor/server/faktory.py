"""Faktory's Work Protocol (placeholder until implemented)."""

from __future__ import annotations

import asyncio

from conveyor.server.core import TaskServer


class FaktorySession:
    """One Faktory connection."""

    def __init__(
        self, server: TaskServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.writer = writer

    @classmethod
    async def open(
        cls, server: TaskServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> FaktorySession:
        """The session for a new connection."""
        return cls(server, reader, writer)

    async def run(self) -> None:
        """Serve requests until the client leaves."""
        self.writer.write(b"-ERR not implemented\r\n")
        await self.writer.drain()
