"""Random request lines against live sessions: one reply each, and the server keeps serving."""

from __future__ import annotations

import json
import random

import pytest

from conveyor.brokers.protocol import Broker
from conveyor.message import TaskState
from server.client import LineClient
from server.conftest import ServerFactory

# Verbs whose reply is immediate (FETCH waits, ATOMIC buffers, QUIT/END close).
VERBS = [b"PUSH", b"push", b"ACK", b"NACK", b"INFO", b"PING", b"PUSHB", b"FAIL", b"BEAT",
         b"FLUSH", b"FROB", b"\xff\xfe", b""]  # fmt: skip
BODIES = [b"", b"{}", b"[]", b"null", b"{", b'{"name":"t"}', b'{"name":"t","payload":[1,{"a":2}]}',
          b'{"id":1}', b'{"id":-1}', b'{"jid":"j","jobtype":"t","args":[1]}', b'{"wid":"w"}',
          b'{"name":"t","execute_at":"bad"}', b'{"retry":1e400}', b"[" * 5000, b"\x00\x01\x02",
          b'{"jid":"x","errtype":"E","message":"m"}', b'"\\ud800"', b"NaN"]  # fmt: skip


def lines(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body = rng.choice(BODIES) if rng.random() < 0.8 else rng.randbytes(rng.randrange(40))
        line = rng.choice(VERBS) + b" " + body.replace(b"\n", b" ")
        out.append(line + rng.choice([b"\n", b"\r\n"]))
    return out


@pytest.mark.parametrize("broker", ["sqlite"], indirect=True)
async def test_random_lines_get_one_reply_each(start_server: ServerFactory, broker: Broker) -> None:
    async with start_server(flush=False) as server:
        m = await LineClient.connect(server.addresses["masenko"])
        for line in lines(1, 300):
            await m.send(line)
            reply = await m.line()
            assert reply.split(b" ", 1)[0] in (b"OK", b"PONG", b"ERR"), (line, reply)
        assert await m.call("PING") == ("PONG", {})

        f = await LineClient.connect(server.addresses["faktory"])
        await f.line()  # +HI
        await f.send('HELLO {"v":2,"wid":"fuzz"}\r\n')
        assert await f.line() == b"+OK\r\n"
        for line in lines(2, 300):
            await f.send(line)
            reply = await f.line()
            if reply.startswith(b"$") and reply != b"$-1\r\n":
                json.loads(await f.line())
            else:
                assert reply[:1] in (b"+", b"-"), (line, reply)
        await f.send("INFO\r\n")
        assert (await f.line()).startswith(b"$")
        # Whatever was stored is whole: every task decodes.
        for queue in await broker.list_queues():
            for state in (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY):
                for info in await broker.list_tasks(queue, state):
                    assert info.payload is not None or info.raw_payload == b"null"
