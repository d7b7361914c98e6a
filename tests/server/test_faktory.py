"""Faktory mode at the wire: handshake, password, field mapping, errors, BEAT, FLUSH, INFO."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from conveyor import AsyncClient, Task, TaskNotFoundError
from conveyor.brokers.protocol import Broker
from conveyor.message import TaskMessage, TaskState
from conveyor.server import TaskServer
from conveyor.server.faktory_wire import password_hash
from server.client import DEADLINE_S, LineClient
from server.conftest import ServerFactory
from support import eventually

shared = pytest.mark.parametrize("broker", ["sqlite", "redis"], indirect=True)


class Resp:
    """A RESP-reading Faktory connection."""

    def __init__(self, conn: LineClient, hi: dict[str, Any]) -> None:
        self.conn, self.hi = conn, hi

    @classmethod
    async def connect(
        cls, server: TaskServer, *, password: str | None = None, wid: str | None = None,
        once: bool = False,
    ) -> Resp:  # fmt: skip
        conn = await LineClient.connect(server.addresses["faktory"])
        first = (await conn.line()).decode()
        assert first.startswith("+HI ") and first.endswith("\r\n") and " " not in first[4:-2]
        resp = cls(conn, json.loads(first[4:]))
        hello: dict[str, Any] = {"v": 2}
        if wid:
            hello.update(wid=wid, hostname="h", pid=1, labels=[])
        if password is not None:
            iterations = 1 if once else resp.hi["i"]
            hello["pwdhash"] = password_hash(password, resp.hi["s"], iterations)
        resp.hello_reply = await resp.call("HELLO " + json.dumps(hello))
        return resp

    async def reply(self) -> Any:
        line = (await self.conn.line()).decode()
        assert line.endswith("\r\n"), line
        kind, body = line[0], line[1:-2]
        if kind == "$":
            if body == "-1":
                return None
            data = await asyncio.wait_for(self.conn.reader.readexactly(int(body) + 2), DEADLINE_S)
            return json.loads(data[:-2])
        return body if kind == "+" else ("ERR", body)

    async def call(self, line: str) -> Any:
        await self.conn.send(line + "\r\n")
        return await self.reply()


def job(jid: str, **fields: Any) -> str:
    return json.dumps({"jid": jid, "jobtype": "t", "args": [1], **fields})


@shared
async def test_password_iterated_or_once_and_a_wrong_one_stores_nothing(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server(password="pw") as server:
        good = await Resp.connect(server, password="pw")
        assert {"i", "s", "v"} <= set(good.hi) and good.hello_reply == "OK"
        assert (await Resp.connect(server, password="pw", once=True)).hello_reply == "OK"
        bad = await Resp.connect(server, password="nope")
        assert bad.hello_reply[0] == "ERR"
        await bad.conn.send("PUSH " + job("sneaky") + "\r\n")
        assert await bad.conn.closed()
        missing = await Resp.connect(server)
        assert missing.hello_reply[0] == "ERR"
        early = await LineClient.connect(server.addresses["faktory"])
        await early.line()
        await early.send("PUSH " + job("early") + "\r\n")
        assert (await early.line()).startswith(b"-ERR")
        assert await broker.list_queues() == []


@shared
async def test_job_fields_map_onto_conveyor_tasks_and_back(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await Resp.connect(server, wid="w1")
        assert await c.call("PUSH " + job("now", at="", reserve_for=120, custom={"a": 1},
                                          priority=9, queue="q")) == "OK"  # fmt: skip
        assert await c.call("PUSH " + job("later", at="2999-01-01T00:00:00Z", queue="q")) == "OK"
        now, later = await broker.get_task("q", "now"), await broker.get_task("q", "later")
        assert (now.state, now.type, now.payload) == (TaskState.PENDING, "t", [1])
        assert now.timeout is not None and now.timeout.total_seconds() == 120
        assert later.state is TaskState.SCHEDULED
        await AsyncClient(broker).enqueue(Task("py", {"k": "v"}), queue="p", max_retry=0)
        fetched = await c.call("FETCH p q")
        assert fetched["args"] == [{"k": "v"}] and fetched["jobtype"] == "py"
        assert fetched["retry"] == -1 and fetched["queue"] == "p"
        assert "custom" not in fetched  # a Python task: no custom
        fetched = await c.call("FETCH p q")
        assert (fetched["jid"], fetched["args"], fetched["reserve_for"]) == ("now", [1], 120)
        assert fetched["custom"] == {"a": 1}


@shared
async def test_custom_is_kept_through_a_retry_and_too_big_a_custom_is_refused(
    start_server: ServerFactory, broker: Broker
) -> None:
    custom = {"trace": {"id": "abc", "tags": ["x", 1, None, 2.5]}, "é": "✓"}
    async with start_server() as server:
        c = await Resp.connect(server, wid="w1")
        assert await c.call("PUSH " + job("kept", custom=custom, retry=3)) == "OK"
        assert await c.call("PUSH " + job("empty", custom={})) == "OK"
        refused = await c.call("PUSH " + job("big", custom={"x": "y" * 10_000}))
        assert refused[0] == "ERR" and "custom" in refused[1]
        assert (await c.call("FETCH"))["custom"] == custom
        fail = {"jid": "kept", "errtype": "Boom", "message": "again"}
        assert await c.call("FAIL " + json.dumps(fail)) == "OK"
        assert "custom" not in await c.call("FETCH")  # "empty": nothing stored
        await broker.run_task("default", "kept")
        again = await c.call("FETCH")
        assert again["jid"] == "kept" and again["custom"] == custom
        assert again["failure"]["message"] == "Boom: again"
        assert (await broker.get_task("default", "empty")).raw_headers is None
        with pytest.raises(TaskNotFoundError):
            await broker.get_task("default", "big")


@shared
async def test_fail_retries_discards_or_kills_by_retry(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await Resp.connect(server, wid="w1")
        for jid, retry in (("again", 3), ("discard", 0), ("dead", -1)):
            assert await c.call("PUSH " + job(jid, retry=retry)) == "OK"
            assert (await c.call("FETCH"))["jid"] == jid
            fail = {"jid": jid, "errtype": "Boom", "message": "it broke", "backtrace": []}
            assert await c.call("FAIL " + json.dumps(fail)) == "OK"
        again = await broker.get_task("default", "again")
        assert again.state is TaskState.RETRY and again.last_error == "Boom: it broke"
        assert again.next_process_at is not None
        with pytest.raises(TaskNotFoundError):
            await broker.get_task("default", "discard")
        assert (await broker.get_task("default", "dead")).state is TaskState.ARCHIVED
        assert (await c.call('ACK {"jid":"again"}'))[0] == "ERR"  # not held any more


@shared
async def test_jobs_are_held_by_wid_across_connections(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        a = await Resp.connect(server, wid="pool")
        assert await a.call("PUSH " + job("j")) == "OK"
        assert (await a.call("FETCH"))["jid"] == "j"
        a.conn.close()
        other = await Resp.connect(server, wid="someone-else")
        assert (await other.call('ACK {"jid":"j"}'))[0] == "ERR"
        b = await Resp.connect(server, wid="pool")
        assert await b.call('BEAT {"wid":"pool"}') == "OK"
        assert await b.call('ACK {"jid":"j"}') == "OK"
        with pytest.raises(TaskNotFoundError):
            await broker.get_task("default", "j")


@shared
async def test_pushb_reports_rejected_jids_and_stores_the_rest(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await Resp.connect(server)
        assert await c.call("PUSH " + job("taken")) == "OK"
        batch = [json.loads(job("a")), {"jid": "b", "jobtype": "t", "args": "nope"},
                 json.loads(job("taken")), json.loads(job("c"))]  # fmt: skip
        rejected = await c.call("PUSHB " + json.dumps(batch))
        assert set(rejected) == {"b", "taken"}
        assert (await broker.queue_stats("default")).pending == 3


@shared
async def test_beat_info_flush_and_bad_commands(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await Resp.connect(server, wid="w")
        for bad in ("PUSH {nope", "PUSH []", 'PUSH {"jid":"x"}', "FROB", "FETCH bad/queue",
                    'ACK {"jid":"not held"}', "BEAT {}", "PUSHB {}", "HELLO {}"):  # fmt: skip
            assert (await c.call(bad))[0] == "ERR", bad
        await c.conn.send(b"\xff\xfe\x00garbage\r\n")
        assert (await c.reply())[0] == "ERR"
        assert await c.call('BEAT {"wid":"w"}') == "OK"
        server.quiet = True
        assert await c.call('BEAT {"wid":"w"}') == '{"state":"quiet"}'
        assert await c.call("FETCH") is None  # quiet: nothing handed out
        server.quiet = False
        assert await c.call("PUSH " + job("x", queue="q")) == "OK"
        info = await c.call("INFO")
        assert info["faktory"]["queues"] == {"q": 1}
        assert await c.call("FLUSH") == "OK"
        assert await broker.list_queues() == []
        server.terminating = True
        assert await c.call('BEAT {"wid":"w"}') == '{"state":"terminate"}'
        assert await c.call("END") == "OK"


@shared
async def test_stopping_tells_workers_to_terminate_and_lets_them_finish(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await Resp.connect(server, wid="w")
        assert await c.call("PUSH " + job("a")) == "OK"
        assert await c.call("PUSH " + job("b")) == "OK"
        assert (await c.call("FETCH default"))["jid"] == "a"
        stopping = asyncio.create_task(server.stop(grace_s=60.0))
        await asyncio.sleep(0)  # let stop() begin
        assert server.terminating
        assert await c.call('BEAT {"wid":"w"}') == '{"state":"terminate"}'
        assert await c.call("FETCH default") is None  # nothing new is handed out
        assert not stopping.done()  # still holding job a: the grace period goes on
        assert await c.call('ACK {"jid":"a"}') == "OK"
        await asyncio.wait_for(stopping, DEADLINE_S)  # told and holding nothing: done early
        stats = await broker.queue_stats("default")
        assert (stats.pending, stats.active, stats.processed_today) == (1, 0, 1)


@shared
async def test_an_ack_in_flight_keeps_the_grace_going_until_it_is_answered(
    start_server: ServerFactory, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    complete = broker.complete

    async def gated(completions: Any) -> list[bool]:
        entered.set()
        await gate.wait()
        return await complete(completions)

    async with start_server() as server:
        c = await Resp.connect(server, wid="w")
        assert await c.call("PUSH " + job("a")) == "OK"
        assert (await c.call("FETCH default"))["jid"] == "a"
        stopping = asyncio.create_task(server.stop(grace_s=60.0))
        await asyncio.sleep(0)
        assert await c.call('BEAT {"wid":"w"}') == '{"state":"terminate"}'
        monkeypatch.setattr(broker, "complete", gated)
        await c.conn.send('ACK {"jid":"a"}\r\n')
        await asyncio.wait_for(entered.wait(), DEADLINE_S)  # held no more, yet not done
        server.worker_news()  # the grace looks again meanwhile
        for _ in range(20):
            await asyncio.sleep(0)
        assert not stopping.done()
        gate.set()
        assert await c.reply() == "OK"  # answered before the connection is dropped
        await asyncio.wait_for(stopping, DEADLINE_S)


@shared
async def test_a_job_still_held_when_the_grace_ends_is_given_back(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server() as server:
        c = await Resp.connect(server, wid="w")
        assert await c.call("PUSH " + job("a")) == "OK"
        assert (await c.call("FETCH default"))["jid"] == "a"
        await server.stop(grace_s=0.3)
        task = await broker.get_task("default", "a")
        assert (task.state, task.retried) == (TaskState.PENDING, 0)


@shared
async def test_no_flush_and_idle_connections(start_server: ServerFactory, broker: Broker) -> None:
    async with start_server(flush=False, idle_timeout_s=0.3) as server:
        c = await Resp.connect(server)
        assert await c.call("PUSH " + job("kept")) == "OK"
        assert (await c.call("FLUSH"))[0] == "ERR"
        assert (await broker.queue_stats("default")).pending == 1
        assert await c.conn.closed()  # idle past the limit


@shared
async def test_a_line_over_the_cap_is_refused_and_closes(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server(max_line_bytes=1024) as server:
        c = await Resp.connect(server)
        await c.conn.send("PUSH " + job("big", args=["x" * 5000]))  # no line end
        assert (await c.reply())[0] == "ERR"
        assert await c.conn.closed()
        assert await broker.list_queues() == []


@pytest.mark.parametrize("broker", ["sqlite"], indirect=True)
async def test_a_job_past_its_reserve_for_is_recovered(
    start_server: ServerFactory, broker: Broker
) -> None:
    async with start_server(lease_s=0.5) as server:
        c = await Resp.connect(server, wid="slow")
        assert await c.call("PUSH " + job("slow", reserve_for=1)) == "OK"
        assert (await c.call("FETCH"))["jid"] == "slow"

        async def recovered() -> bool:
            # The worker keeps beating; the job's own reservation is what runs out.
            assert await c.call('BEAT {"wid":"slow"}') == "OK"
            info = await broker.get_task("default", "slow")
            return info.state is not TaskState.ACTIVE and info.retried == 1

        await eventually(recovered, within=15.0, interval=0.3)
        assert (await c.call('ACK {"jid":"slow"}'))[0] == "ERR"  # too late: refused


@pytest.mark.parametrize("broker", ["sqlite"], indirect=True)
async def test_a_stored_payload_that_is_not_json_is_archived_not_sent(
    start_server: ServerFactory, broker: Broker
) -> None:
    await broker.enqueue([TaskMessage(id="bad", type="t", payload=b"{not json")])
    await broker.enqueue([TaskMessage(id="good", type="t", payload=b"[1]")])
    async with start_server() as server:
        c = await Resp.connect(server, wid="w")
        assert (await c.call("FETCH"))["jid"] == "good"
        bad = await broker.get_task("default", "bad")
        assert bad.state is TaskState.ARCHIVED and "cannot be sent" in (bad.last_error or "")
