"""A minimal line client for the server tests (request, reply; every read has a deadline)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

DEADLINE_S = 5.0


class LineClient:
    opened: list[LineClient] = []  # closed after each test by conftest's close_clients

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> LineClient:
        reader, writer = await asyncio.open_connection(*address, limit=2**22)
        client = cls(reader, writer)
        cls.opened.append(client)
        return client

    async def send(self, line: bytes | str) -> None:
        self.writer.write(line.encode() if isinstance(line, str) else line)
        await self.writer.drain()

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), DEADLINE_S)

    async def call(self, line: str) -> tuple[str, Any]:
        """Send one request line; return the reply's verb and parsed JSON body."""
        await self.send(line + "\n")
        verb, _, body = (await self.line()).decode().rstrip("\n").partition(" ")
        return verb, json.loads(body) if body else None

    async def closed(self) -> bool:
        """Whether the server closed the connection (reads EOF within the deadline)."""
        return await asyncio.wait_for(self.reader.read(), DEADLINE_S) == b""

    def close(self) -> None:
        self.writer.close()

    @classmethod
    async def close_all(cls) -> None:
        while cls.opened:
            client = cls.opened.pop()
            client.writer.close()
            with contextlib.suppress(Exception):
                await client.writer.wait_closed()
