"""The server's line protocol (conveyor.server.connection), fed bytes directly."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.server.connection import Connection, LineTooLongError


class FakeTransport:
    """What the connection asks of its transport: pausing, resuming, writes, close."""

    def __init__(self) -> None:
        self.paused = False
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def _open(max_line_bytes: int = 10) -> tuple[Connection, FakeTransport]:
    conn, transport = Connection(max_line_bytes=max_line_bytes), FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_lines_split_across_chunks_come_whole_then_none_at_eof() -> None:
    conn, _ = _open()
    for chunk in (b"PI", b"NG\nFETCH", b" {}\r\nA", b"CK\n", b"partial"):
        conn.data_received(chunk)
    assert conn.eof_received() is True  # half-closed: the replies can still be written
    lines = [await conn.line(1.0) for _ in range(4)]
    assert lines == [b"PING\n", b"FETCH {}\r\n", b"ACK\n", None]


async def test_a_waiting_reader_wakes_when_its_line_completes() -> None:
    conn, _ = _open()
    reading = asyncio.create_task(conn.line(5.0))
    await asyncio.sleep(0)
    conn.data_received(b"PU")
    await asyncio.sleep(0)
    assert not reading.done()
    conn.data_received(b"SH\n")
    assert await reading == b"PUSH\n"


async def test_nothing_within_the_timeout_raises_and_a_later_line_still_comes() -> None:
    conn, _ = _open()
    with pytest.raises(TimeoutError):
        await conn.line(0.05)
    conn.data_received(b"PING\n")
    assert await conn.line(0.05) == b"PING\n"


async def test_lines_before_an_overlong_one_are_served_then_it_raises() -> None:
    conn, transport = _open(max_line_bytes=10)
    conn.data_received(b"0123456789\n" + b"x" * 11 + b"\nPING\n")
    assert await conn.line(1.0) == b"0123456789\n"  # the cap, with its newline
    with pytest.raises(LineTooLongError):
        await conn.line(1.0)
    assert transport.paused  # nothing after it is read


async def test_an_overlong_partial_line_raises_without_waiting_for_its_end() -> None:
    conn, _ = _open(max_line_bytes=10)
    conn.data_received(b"x" * 6)
    conn.data_received(b"x" * 6)
    with pytest.raises(LineTooLongError):
        await conn.line(1.0)


async def test_a_client_sending_far_ahead_is_paused_until_its_lines_are_read() -> None:
    conn, transport = _open(max_line_bytes=10)
    conn.data_received(b"PING\n" * 5)  # 25 bytes: more than twice the cap of 11
    assert transport.paused
    for _ in range(3):
        assert await conn.line(1.0) == b"PING\n"
    assert not transport.paused  # 10 bytes left


async def test_send_writes_and_a_lost_connection_refuses() -> None:
    conn, transport = _open()
    await conn.send(b"OK {}\n")
    assert transport.written == [b"OK {}\n"]
    conn.connection_lost(None)
    assert await conn.line(1.0) is None
    with pytest.raises(ConnectionResetError):
        await conn.send(b"OK {}\n")
    await conn.aclose()
    assert transport.closed


async def test_a_send_waits_while_the_client_does_not_read() -> None:
    conn, _ = _open()
    conn.pause_writing()
    sending = asyncio.create_task(conn.send(b"x"))
    await asyncio.sleep(0)
    assert not sending.done()
    conn.resume_writing()
    await asyncio.wait_for(sending, 1.0)
