"""Replays masenko scenario scripts (the transcripts README's format) against a server, loosely.

One step per line: ``<client> send <line>`` or ``<client> recv <line>``; ``# `` starts a
comment. Each client name gets its own connection, opened on first use. ``recv`` compares
the reply's verb and its JSON body as parsed values; any ``ERR`` matches any ``ERR`` (loose
mode). Every read has a deadline. Two macros keep the files readable: ``${PAD:N}`` is N
letters ``x`` and ``${AT:+S}`` is the RFC 3339 UTC time S seconds from now.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

READ_DEADLINE_S = 5.0
_MACRO = re.compile(r"\$\{(PAD|AT):([+-]?\d+)\}")


@dataclass(frozen=True)
class Step:
    line_no: int
    client: str
    action: str
    text: str


def parse_script(path: Path) -> list[Step]:
    steps = []
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        client, action, text = line.split(" ", 2)
        assert action in ("send", "recv"), f"{path.name}:{n}: unknown action {action!r}"
        steps.append(Step(n, client, action, text))
    return steps


def expand(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) == "PAD":
            return "x" * int(match.group(2))
        when = datetime.now(UTC) + timedelta(seconds=int(match.group(2)))
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")

    return _MACRO.sub(one, text)


def loosely_equal(expected: str, got: str) -> bool:
    want_verb, _, want_body = expected.partition(" ")
    got_verb, _, got_body = got.partition(" ")
    if want_verb != got_verb:
        return False
    if want_verb == "ERR":
        return True
    return bool(json.loads(want_body or "{}") == json.loads(got_body or "{}"))


async def replay(path: Path, host: str, port: int) -> None:
    """Run one script; an AssertionError names the file, line, expected and received reply."""
    conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    try:
        for step in parse_script(path):
            if step.client not in conns:
                conns[step.client] = await asyncio.open_connection(host, port, limit=2**22)
            reader, writer = conns[step.client]
            where = f"{path.name}:{step.line_no}"
            if step.action == "send":
                writer.write(expand(step.text).encode() + b"\n")
                await writer.drain()
                continue
            try:
                got = await asyncio.wait_for(reader.readline(), READ_DEADLINE_S)
            except TimeoutError:
                raise AssertionError(f"{where}: no reply within {READ_DEADLINE_S}s") from None
            assert got.endswith(b"\n"), f"{where}: connection closed, expected {step.text}"
            reply = got.decode().rstrip("\n")
            assert loosely_equal(step.text, reply), f"{where}: expected {step.text}, got {reply}"
    finally:
        for _, writer in conns.values():
            writer.close()
