"""masenko's line protocol: one session per connection, which holds the tasks it fetched.

Each verb maps onto broker transitions (see docs/server.md): PUSH enqueues, FETCH claims with a
lease the server renews while the connection lives, ACK completes, NACK retries after
``failures**4`` seconds or, out of retries, moves the task to its dead queue (one atomic
``complete`` with the copy as successor) or archives it. A dropped connection NACKs what it
held; a stopping server releases it instead (no failure counted), as a masenko restart does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from collections.abc import Sequence

from conveyor.brokers.atomic import CrossSlotError
from conveyor.errors import (
    BrokerError,
    ConveyorError,
    LeaseLostError,
    ProtocolError,
    TaskIdConflictError,
)
from conveyor.message import Completion, Encoding, Lease, TaskMessage, _new_task_message
from conveyor.server.connection import Connection, LineTooLongError
from conveyor.server.core import TaskServer
from conveyor.server.holdings import Held
from conveyor.server.masenko_wire import (
    EMPTY,
    OK,
    PONG,
    PushRequest,
    error_reply,
    parse_fetch,
    parse_id,
    parse_push,
    reply,
    split_request,
)

logger = logging.getLogger(__name__)

_MASENKO_ID = re.compile(r"([0-9]{1,10})(?::(.+))?")
_ID_ATTEMPTS = 64  # ids taken by tasks that outlived a restart are skipped, this many at most
MAX_ATOMIC_LINES = 10_000


_VERBS_WITH_BODY = {v.encode(): v for v in ("PUSH", "FETCH", "ACK", "NACK")}
"""The verbs whose lines :meth:`MasenkoSession.run` splits itself (as split_request would)."""


class _Refused(Exception):
    """A request answered with ERR; the connection stays open."""


def masenko_parts(task_id: str) -> tuple[int | None, str | None]:
    """A stored task id's masenko id and dead queue: ``"0000000007:dead"`` -> (7, ``"dead"``).

    Tasks not pushed through masenko (a Python client's ids) give ``(None, None)``.
    """
    if len(task_id) == 10 and task_id.isascii() and task_id.isdigit():  # the usual, quickly
        number = int(task_id)
        return (number, None) if 0 < number < 2**32 else (None, None)
    match = _MASENKO_ID.fullmatch(task_id)
    if match is None or not 0 < int(match.group(1)) < 2**32:
        return None, None
    return int(match.group(1)), match.group(2)


def task_id_of(number: int, deadqueue: str | None = None) -> str:
    """The stored task id of masenko id ``number``: ten digits, then ``:deadqueue`` if any.

    Zero-padded so that ids sort as numbers: a broker that orders tasks due at the same
    instant by id (Redis does) then hands them out in push order.
    """
    return f"{number:010d}" if deadqueue is None else f"{number:010d}:{deadqueue}"


class MasenkoSession:
    """One masenko connection."""

    def __init__(self, server: TaskServer, conn: Connection) -> None:
        self.server = server
        self.broker = server.broker
        self.config = server.config
        self.lines = conn
        # One write per reply: the Python client reads a transaction reply with one recv().
        self._send = conn.send
        self.holder = ("masenko", id(self))
        self._max_payload = server.config.max_payload_bytes
        self._loop = asyncio.get_running_loop()

    async def run(self) -> None:
        """Serve requests until QUIT, end of stream, silence, a huge line or a server stop."""
        # Looked up once: this loop runs for every request.
        next_line, write, heartbeat_s = self.lines.line, self.lines.write, self.config.heartbeat_s
        stopping, metrics = self.server.stopping, self.server.metrics
        try:
            while not stopping.is_set():
                line = await next_line(heartbeat_s)
                if line is None:
                    return
                # The usual request, ``VERB {...}`` in upper case, without split_request's steps.
                verb_bytes, _, body = line.partition(b" ")
                verb = _VERBS_WITH_BODY.get(verb_bytes)
                if verb is None:
                    verb, body = split_request(line)
                else:
                    body = body.strip()
                if verb == "QUIT":
                    metrics.request("masenko", verb, error=False)
                    await self._send(reply("OK"))
                    return
                if verb == "ATOMIC":
                    answer = await self._atomic()
                else:
                    answer = await self._request(verb, body)
                metrics.request("masenko", verb, error=answer[:3] == b"ERR")
                if write(answer):
                    await self.lines.drain()
        except TimeoutError:
            await self._try_send(error_reply("no heartbeat"))
        except LineTooLongError:
            limit = self.config.max_line_bytes
            await self._try_send(error_reply(f"line longer than {limit} bytes"))
        except (ConnectionError, OSError):
            pass
        finally:
            await self._give_back()

    async def _try_send(self, line: bytes) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._send(line)

    async def _give_back(self) -> None:
        held = self.server.holdings.drop_holder(self.holder)
        for h in held:
            try:
                if self.server.terminating:
                    await self.broker.release(h.lease)
                else:
                    await self._fail(h.lease)
            except (ConveyorError, OSError) as exc:
                logger.warning("could not give back task %s: %s", h.lease.task.id, exc)

    async def _request(self, verb: str, body: bytes) -> bytes:
        try:
            if verb == "PUSH":
                return b'OK {"id":%d}\n' % await self._push(body)
            if verb == "FETCH":
                return await self._fetch(body)
            if verb == "ACK" or verb == "NACK":
                await self._ack(parse_id(body), nack=verb == "NACK")
                return OK
            if verb == "PING":
                return PONG
            if verb == "INFO":
                return reply("OK", {"queues": await self._info()})
            shown = verb if verb.isprintable() else ascii(verb)
            return error_reply(f"unknown verb {shown[:100]}")
        except (ProtocolError, _Refused) as exc:
            return error_reply(str(exc))
        except BrokerError as exc:
            logger.warning("masenko %s failed: %s", verb, exc)
            return error_reply(f"broker error: {type(exc).__name__}")

    # -- PUSH --------------------------------------------------------------------------------

    def _message(self, push: PushRequest, number: int) -> TaskMessage:
        # Positional, without the frozen dataclass's __init__ (one message per task pushed).
        payload = b"null" if push.payload is None else push.payload
        return _new_task_message(
            task_id_of(number, push.deadqueue), push.name, push.queue, payload, Encoding.JSON,
            push.retry, None, None, 0.0, None, None, push.execute_at, None, None,
        )  # fmt: skip

    async def _push(self, body: bytes) -> int:
        push = parse_push(body, max_payload_bytes=self._max_payload)
        return (await self._store([push], []))[0]

    async def _store(self, pushes: Sequence[PushRequest], acks: Sequence[Lease]) -> list[int]:
        """Enqueue ``pushes`` and complete ``acks`` in one atomic step; new ids on a conflict.

        The pushes ride on the first ACK as its successors, and ``complete_all`` applies every
        ACK and push or nothing (a lease lost since FETCH refuses the whole block). Returns the
        pushed tasks' masenko ids.
        """
        atomic = self.server.atomic
        if atomic is None:
            raise _Refused("this broker cannot apply a block atomically")
        ids = self.server.masenko_ids
        for _ in range(_ID_ATTEMPTS):
            numbers = [ids.next() for _ in pushes]
            messages = [self._message(p, n) for p, n in zip(pushes, numbers, strict=True)]
            try:
                if not acks:
                    await atomic.enqueue_all(messages)
                    self.server.metrics.pushed("masenko", len(messages))
                    return numbers
                completions = [Completion(lease=acks[0], successors=tuple(messages))]
                completions += [Completion(lease=lease) for lease in acks[1:]]
                applied = await atomic.complete_all(completions)
            except TaskIdConflictError:
                continue  # a task from before a restart still has that id in its queue
            except CrossSlotError as exc:
                raise _Refused(str(exc)) from None
            except BrokerError:
                raise
            except ConveyorError as exc:
                raise _Refused(f"cannot push to queue: {exc}") from None
            if not applied:
                if len(acks) == 1:
                    raise _Refused(f"task {acks[0].task.id} not acquired (its lease was lost)")
                raise _Refused("a task of the block is not acquired (its lease was lost)")
            if messages:
                self.server.metrics.pushed("masenko", len(messages))
            self.server.metrics.acked("masenko", len(acks))
            return numbers
        raise _Refused("cannot push to queue: no free task id")

    # -- FETCH -------------------------------------------------------------------------------

    async def _fetch(self, body: bytes) -> bytes:
        request = parse_fetch(body, heartbeat_s=self.config.heartbeat_s)
        if not request.queues or self.server.terminating:
            return EMPTY
        loop = self._loop
        started = loop.time()
        deadline = started + request.timeout_s
        while True:
            # Look before waiting: a ready task is returned even with a 1 ns timeout.
            lease = await self.server.claims.claim(request.queues)
            if lease is not None:
                self.server.metrics.fetched("masenko", loop.time() - started, found=True)
                return self._hold(lease)
            remaining = deadline - loop.time()
            if remaining <= 0 or self.server.terminating:
                self.server.metrics.fetched("masenko", loop.time() - started, found=False)
                return EMPTY
            await self.broker.wait_for_tasks(request.queues, remaining)

    def _hold(self, lease: Lease) -> bytes:
        number, _ = masenko_parts(lease.task.id)
        holdings = self.server.holdings
        if number is None or holdings.get(self.holder, number) is not None:
            number = self.server.masenko_ids.next()  # a Python client's task, or an id clash
        holdings.add(self.holder, number, Held(lease))
        task = lease.task
        head = f'OK {{"id":{number},"queue":"{task.queue}","name":"{task.type}"'
        payload = ""
        if task.encoding is Encoding.BYTES:
            payload = f',"payload":"{base64.b64encode(task.raw_payload).decode()}"'
        elif task.raw_payload != b"null":
            raw = task.raw_payload
            if b"\n" in raw:  # stored by another writer, not compactly: one line per reply
                raw = json.dumps(json.loads(raw), separators=(",", ":")).encode()
            payload = f',"payload":{raw.decode()}'
        failures = f',"failures":{task.retried}' if task.retried else ""
        return f"{head}{payload}{failures}}}\n".encode()

    # -- ACK / NACK --------------------------------------------------------------------------

    async def _ack(self, number: int, *, nack: bool) -> None:
        held = self.server.holdings.pop(self.holder, number)
        if held is None:
            raise _Refused("task not acquired")
        try:
            if nack:
                await self._fail(held.lease)
            elif await self.server.acks.complete(held.lease):
                self.server.metrics.acked("masenko")
            else:
                raise _Refused("task not acquired (its lease was lost)")
        except LeaseLostError:
            raise _Refused("task not acquired (its lease was lost)") from None

    async def _fail(self, lease: Lease) -> None:
        """masenko's failure path: retry after failures^4 s, else the dead queue, else archive."""
        task = lease.task
        failures = task.retried + 1
        self.server.metrics.failed("masenko")
        if failures <= task.max_retry:
            # Not truncated to the second as the reference does: tasks failed in the same
            # second then come back in the order they failed.
            await self.broker.retry(lease, error="NACK", delay_s=float(failures**4))
            return
        number, deadqueue = masenko_parts(task.id)
        if deadqueue is not None:
            copy = TaskMessage(
                id=task_id_of(number) if number is not None else task.id,
                type=task.type,
                queue=deadqueue,
                payload=task.raw_payload,
                encoding=task.encoding,
                max_retry=task.max_retry,
            )
            try:
                if (await self.broker.complete([Completion(lease=lease, successors=(copy,))]))[0]:
                    return
                raise LeaseLostError(task_id=task.id, queue=task.queue)
            except TaskIdConflictError:
                pass  # the dead queue already holds that id: keep the task archived instead
        await self.broker.archive(lease, error=f"NACK: out of retries ({task.max_retry})")

    # -- INFO --------------------------------------------------------------------------------

    async def _info(self) -> list[dict[str, object]]:
        queues = []
        for name in await self.broker.list_queues():
            s = await self.broker.queue_stats(name)
            queues.append(
                {
                    "name": name,
                    "ready": s.pending,
                    "delayed": s.scheduled + s.retry,
                    "to_ack": s.active,
                }
            )
        return queues

    # -- ATOMIC ------------------------------------------------------------------------------

    async def _read_block(self) -> list[bytes]:
        """The lines up to DONE; any line resets the heartbeat (the reference's does not)."""
        block: list[bytes] = []
        size = 0
        while True:
            line = await self.lines.line(self.config.heartbeat_s)
            if line is None:
                raise ConnectionError("disconnected inside ATOMIC")
            if split_request(line)[0] == "DONE":
                return block
            size += len(line)
            if size > self.config.max_line_bytes or len(block) >= MAX_ATOMIC_LINES:
                raise LineTooLongError
            block.append(line)

    async def _atomic(self) -> bytes:
        block = await self._read_block()
        pushes: list[PushRequest] = []
        acks: list[int] = []
        validated = False
        try:
            for i, line in enumerate(block):
                verb, body = split_request(line)
                if verb == "PUSH":
                    try:
                        pushes.append(
                            parse_push(body, max_payload_bytes=self.config.max_payload_bytes)
                        )
                    except ProtocolError as exc:
                        raise _Refused(f"message {i}: PUSH: {exc}") from None
                elif verb == "ACK":
                    try:
                        number = parse_id(body)
                    except ProtocolError as exc:
                        raise _Refused(f"message {i}: ACK: {exc}") from None
                    if number in acks or self.server.holdings.get(self.holder, number) is None:
                        raise _Refused(f"task {number} not acquired")
                    acks.append(number)
                else:
                    shown = verb if verb.isprintable() else ascii(verb)
                    raise _Refused(f"{shown[:100]} is not allowed in transaction.")
            validated = True
            return await self._apply(pushes, acks)
        except _Refused as exc:
            if not validated:  # as in the reference, the ids handed out so far are used up
                for _ in pushes:
                    self.server.masenko_ids.next()
            return error_reply(str(exc))
        except BrokerError as exc:
            logger.warning("masenko ATOMIC failed: %s", exc)
            return error_reply(f"broker error: {type(exc).__name__}")

    def _forget(self, numbers: list[int]) -> None:
        for number in numbers:
            self.server.holdings.pop(self.holder, number)

    async def _apply(self, pushes: list[PushRequest], acks: list[int]) -> bytes:
        leases = []
        for number in acks:
            held = self.server.holdings.get(self.holder, number)
            assert held is not None
            leases.append(held.lease)
        numbers = await self._store(pushes, leases)
        # A refused block keeps its tasks held: a lost lease is dropped by the next renewal.
        self._forget(acks)
        if not numbers:
            return reply("OK")
        return reply("OK", {"ids": numbers})
