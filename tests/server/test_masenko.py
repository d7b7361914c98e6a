"""masenko mode beyond the scenario scripts: limits, fencing, interplay with Python clients."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from pathlib import Path

import pytest
from tls import make_certs

from conveyor import AsyncClient, Task, TaskNotFoundError
from conveyor.brokers.protocol import Broker
from conveyor.message import TaskState
from conveyor.server.masenko import masenko_parts, task_id_of
from server.client import LineClient
from server.conftest import SHARED_BROKERS, ServerFactory
from support import eventually

shared = pytest.mark.parametrize("broker", SHARED_BROKERS, indirect=True)


@shared
async def test_a_line_over_the_cap_is_refused_and_closes(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server(max_line_bytes=4096) as server:
        c = await LineClient.connect(server.addresses["masenko"])
        await c.send(b'PUSH {"name":"x","payload":"' + b"y" * 20_000)  # no newline, ever
        assert (await c.line()).startswith(b"ERR ")
        assert await c.closed()
        assert await broker.list_queues() == []
        other = await LineClient.connect(server.addresses["masenko"])
        assert await other.call("PING") == ("PONG", {})


@shared
async def test_a_block_reply_is_one_write(start_server: ServerFactory) -> None:
    async with start_server() as server:
        c = await LineClient.connect(server.addresses["masenko"])
        block = "ATOMIC\n" + 'PUSH {"name":"t"}\n' * 100 + "DONE\n"
        await c.send(block)
        data = await asyncio.wait_for(c.reader.read(4096), 5.0)  # one recv, as the client does
        assert data.endswith(b"\n")
        assert data.startswith(b'OK {"ids":[1,2,3,')


@shared
async def test_a_python_task_is_fetched_and_a_masenko_push_is_a_conveyor_task(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        client = AsyncClient(broker)
        info = await client.enqueue(Task("email:welcome", {"user_id": 42}), queue="mail")
        c = await LineClient.connect(server.addresses["masenko"])
        verb, body = await c.call('FETCH {"queues":["mail"]}')
        assert verb == "OK" and body["name"] == "email:welcome"
        assert body["payload"] == {"user_id": 42} and isinstance(body["id"], int)
        assert await c.call(f'ACK {{"id":{body["id"]}}}') == ("OK", {})
        with pytest.raises(TaskNotFoundError):
            await broker.get_task("mail", info.id)  # acked: deleted
        verb, body = await c.call('PUSH {"name":"resize","queue":"img","payload":{"w":3}}')
        task = await broker.get_task("img", task_id_of(body["id"]))
        assert (task.type, task.payload, task.state) == ("resize", {"w": 3}, TaskState.PENDING)
        assert task.max_retry == 20


@shared
async def test_a_late_ack_with_a_stale_token_is_refused(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await LineClient.connect(server.addresses["masenko"])
        await c.call('PUSH {"name":"t"}')
        _, body = await c.call("FETCH")
        held = server.holdings.get(next(iter(server.holdings.holders())), body["id"])
        assert held is not None
        held.lease = dataclasses.replace(held.lease, token=held.lease.token + 1000)
        assert (await c.call('ACK {"id":1}'))[0] == "ERR"
        task = await broker.get_task("default", task_id_of(1))
        assert task.state is TaskState.ACTIVE  # untouched; it comes back when its lease lapses


@shared
async def test_stopping_gives_held_tasks_back_without_a_failure(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await LineClient.connect(server.addresses["masenko"])
        await c.call('PUSH {"name":"t"}')
        assert (await c.call("FETCH"))[0] == "OK"
    task = await broker.get_task("default", task_id_of(1))
    assert (task.state, task.retried) == (TaskState.PENDING, 0)


@shared
async def test_bad_input_keeps_the_server_serving(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await LineClient.connect(server.addresses["masenko"])
        for junk in [b"\x00\xff\xfe garbage\n", b"PUSH {not json\n", b"PUSH [1]\n",
                     b'PUSH {"name":"x","retry":300}\n', b'PUSH {"name":"a b"}\n',
                     b'FETCH {"queues":"default"}\n', b'PUSH {"name":"x","payload":NaN}\n',
                     b"PUSH " + b"[" * 100_000 + b"\n"]:  # fmt: skip
            await c.send(junk)
            assert (await c.line()).startswith(b"ERR "), junk[:40]
        assert await c.call("PING") == ("PONG", {})
        # A client leaving in the middle of a block stores nothing.
        d = await LineClient.connect(server.addresses["masenko"])
        await d.send('ATOMIC\nPUSH {"name":"half"}\n')
        d.close()
        await asyncio.sleep(0)  # let the server see the end of the stream
        assert await c.call("PING") == ("PONG", {})
        assert await broker.list_queues() == []


@shared
async def test_connections_over_the_cap_are_refused(start_server: ServerFactory) -> None:
    async with start_server(max_connections=1) as server:
        first = await LineClient.connect(server.addresses["masenko"])
        assert await first.call("PING") == ("PONG", {})
        second = await LineClient.connect(server.addresses["masenko"])
        assert (await second.line()).startswith(b"ERR ")
        assert await second.closed()
        first.close()

        async def closed() -> bool:
            return server.connections == 0

        await eventually(closed, within=5.0)


def test_masenko_ids_are_read_back_from_task_ids() -> None:
    assert masenko_parts(task_id_of(7)) == (7, None) and task_id_of(7) == "0000000007"
    assert masenko_parts(task_id_of(7, "dead")) == (7, "dead")
    assert masenko_parts("7") == (7, None)
    assert masenko_parts("7:dead") == (7, "dead")
    assert masenko_parts("0") == (None, None)
    assert masenko_parts("01890a5d-ac96-774b-bcce-b302099a8057") == (None, None)
    assert masenko_parts("99999999999") == (None, None)


@shared
async def test_a_block_with_a_lost_lease_changes_nothing(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await LineClient.connect(server.addresses["masenko"])
        for _ in range(2):
            await c.call('PUSH {"name":"t"}')
            await c.call("FETCH")
        holder = next(iter(server.holdings.holders()))
        held = server.holdings.get(holder, 2)
        assert held is not None
        held.lease = dataclasses.replace(held.lease, token=held.lease.token + 1000)
        await c.send('ATOMIC\nPUSH {"name":"new"}\nACK {"id":1}\nACK {"id":2}\nDONE\n')
        assert (await c.line()).startswith(b"ERR ")
        stats = await broker.queue_stats("default")
        assert (stats.pending, stats.active) == (0, 2)  # task 1 not acked, nothing pushed
        assert await c.call('ACK {"id":1}') == ("OK", {})  # still held by this connection


@shared
async def test_a_block_whose_lease_lapsed_in_the_broker_is_refused_whole(
    start_server: ServerFactory, broker: Broker
) -> None:
    # The lease of task 2 is gone in the broker (recovered behind the server's back) while the
    # server still lists it as held: the block's ACK of task 1 and its PUSH must not apply.
    async with start_server() as server:
        c = await LineClient.connect(server.addresses["masenko"])
        for _ in range(3):
            await c.call('PUSH {"name":"t"}')
        for _ in range(3):
            await c.call("FETCH")
        holder = next(iter(server.holdings.holders()))
        held = server.holdings.get(holder, 2)
        assert held is not None
        await broker.release(held.lease)
        await c.send('ATOMIC\nPUSH {"name":"new"}\nACK {"id":1}\nACK {"id":2}\nDONE\n')
        assert (await c.line()).startswith(b"ERR ")
        stats = await broker.queue_stats("default")
        assert (stats.pending, stats.active, stats.processed_today) == (1, 2, 0)
        await c.send('ATOMIC\nPUSH {"name":"new"}\nACK {"id":1}\nACK {"id":3}\nDONE\n')
        assert await c.line() == b'OK {"ids":[5]}\n'  # id 4 was used up by the refused block
        stats = await broker.queue_stats("default")
        assert (stats.pending, stats.active, stats.processed_today) == (2, 0, 2)


@pytest.mark.parametrize("broker", ["sqlite"], indirect=True)
async def test_tls_on_both_ports(start_server: ServerFactory, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    context = ssl.create_default_context(cafile=str(certs.ca))
    async with start_server(
        tls_cert=str(certs.server_cert), tls_key=str(certs.server_key)
    ) as server:
        reader, writer = await asyncio.open_connection(*server.addresses["masenko"], ssl=context)
        writer.write(b"PING\n")
        assert await asyncio.wait_for(reader.readline(), 5.0) == b"PONG {}\n"
        await _close(writer)
        reader, writer = await asyncio.open_connection(*server.addresses["faktory"], ssl=context)
        assert (await asyncio.wait_for(reader.readline(), 5.0)).startswith(b"+HI ")
        await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


@shared
async def test_many_clients_at_once_each_get_their_own_tasks_once(
    start_server: ServerFactory, broker: Broker
) -> None:
    """Concurrent FETCHes and ACKs share claims and completion calls (batching.py)."""
    async with start_server() as server:

        async def cycles(n: int) -> list[int]:
            c = await LineClient.connect(server.addresses["masenko"])
            got = []
            for i in range(n):
                verb, body = await c.call(f'PUSH {{"name":"t","queue":"many","payload":{i}}}')
                assert verb == "OK"
                verb, body = await c.call('FETCH {"queues":["many"]}')
                assert verb == "OK"
                got.append(body["payload"])
                assert await c.call(f'ACK {{"id":{body["id"]}}}') == ("OK", {})
            return got

        fetched = await asyncio.gather(*(cycles(20) for _ in range(16)))

    assert sorted(p for got in fetched for p in got) == sorted(list(range(20)) * 16)
    stats = await broker.queue_stats("many")
    assert (stats.pending, stats.active, stats.processed_today) == (0, 0, 320)
