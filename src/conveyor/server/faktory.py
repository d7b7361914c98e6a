"""Faktory's Work Protocol: one session per connection; jobs are held by the worker id (wid).

A consumer HELLOs with a ``wid`` and may use several connections (Node's ``faktory-worker``
keeps a pool); the jobs it fetched are held by that wid, renewed while its BEATs keep coming
and each job's ``reserve_for`` has not run out, so a worker that vanishes loses its jobs to the
recovery scan. A connection without a wid (a producer) holds what it fetches itself, and a
failure is recorded for each when it closes. FAIL retries after Faktory's backoff,
``retry_count**4 + 15 + rand(30) * (retry_count + 1)`` seconds, then moves the job to the dead
set (ARCHIVED); a job pushed with ``retry: 0`` is discarded instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import Hashable
from datetime import UTC, datetime

from conveyor.errors import (
    BrokerError,
    ConveyorError,
    LeaseLostError,
    ProtocolError,
    QueueInUseError,
    TaskIdConflictError,
)
from conveyor.message import Completion, Lease, TaskMessage, TaskState
from conveyor.server import faktory_wire as wire
from conveyor.server.connection import Connection, LineTooLongError
from conveyor.server.core import TaskServer
from conveyor.server.holdings import Held

logger = logging.getLogger(__name__)

FETCH_WAIT_S = 2.0
"""How long a FETCH waits for a job when none is ready, as Faktory does."""
_VERSION = "1.9.0"  # the Faktory release whose INFO shape this mimics

_SETTLED = (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED)


def faktory_backoff(retry_count: int) -> float:
    """Seconds before a failed job's next attempt, as Faktory computes it."""
    # The random part spreads jobs that failed together (a dependency outage) apart.
    return float(retry_count**4 + 15 + random.randint(0, 29) * (retry_count + 1))


_VERBS_WITH_ARGUMENT = {v.encode(): v for v in ("PUSH", "FETCH", "ACK", "FAIL", "BEAT")}
"""The verbs whose lines :func:`_split` splits itself (as split_command would)."""


def _split(line: bytes) -> tuple[str, str]:
    """:func:`~conveyor.server.faktory_wire.split_command`, in fewer steps for the usual line,
    ``VERB <argument>`` in upper case."""
    verb_bytes, _, rest = line.partition(b" ")
    verb = _VERBS_WITH_ARGUMENT.get(verb_bytes)
    if verb is not None:
        try:
            return verb, rest.decode().strip()
        except UnicodeDecodeError:
            pass  # refused by split_command, with its message
    return wire.split_command(line)


class _Refused(Exception):
    """A command answered with ``-ERR``; the connection stays open."""


class FaktorySession:
    """One Faktory connection."""

    def __init__(self, server: TaskServer, conn: Connection) -> None:
        self.server = server
        self.broker = server.broker
        self.config = server.config
        self.lines = conn
        self._send = conn.send
        self.identified = False
        self.wid: str | None = None
        self._holder: Hashable | None = None  # made once identified (see holder)
        self.salt = secrets.token_hex(8)
        self.iterations = secrets.randbelow(4000) + 1000

    @property
    def holder(self) -> Hashable:
        """Who holds what this connection fetches: its worker id, else the connection."""
        if self._holder is None:
            self._holder = ("faktory", self.wid) if self.wid else ("faktory-connection", id(self))
        return self._holder

    async def run(self) -> None:
        """Greet, then serve commands until END, end of stream, idleness or a refused HELLO."""
        hi: dict[str, object] = {"v": 2}
        if self.config.password:
            hi.update(i=self.iterations, s=self.salt)
        try:
            await self._send(b"+HI " + wire.compact(hi) + b"\r\n")
            # Looked up once: this loop runs for every command.
            next_line, write, idle_s = self.lines.line, self.lines.write, self.config.idle_timeout_s
            while True:
                line = await next_line(idle_s)
                if line is None:
                    return
                try:
                    verb, arg = _split(line)
                except ProtocolError as exc:
                    self.server.metrics.request("faktory", "", error=True)
                    await self._send(wire.error(str(exc)))
                    continue
                if verb == "END":
                    self.server.metrics.request("faktory", verb, error=False)
                    await self._send(wire.ok())
                    return
                if not self.identified:
                    welcomed = await self._hello(verb, arg)
                    self.server.metrics.request("faktory", verb, error=not self.identified)
                    if not welcomed:
                        return
                    continue
                if write(await self._command(verb, arg)):
                    await self.lines.drain()
        except TimeoutError:
            pass  # idle past the limit: close without a word, as Faktory does
        except LineTooLongError:
            limit = self.config.max_line_bytes
            with contextlib.suppress(ConnectionError, OSError):
                await self._send(wire.error(f"line longer than {limit} bytes"))
        except (ConnectionError, OSError):
            pass
        finally:
            await self._close()

    async def _close(self) -> None:
        if self.wid:
            self.server.worker_connections[self.wid] -= 1
            self.server.worker_news()
            return  # held by the worker id: its BEATs (or their absence) decide
        for held in self.server.holdings.drop_holder(self.holder):
            try:
                if self.server.terminating:
                    await self.broker.release(held.lease)
                else:
                    await self._fail(held.lease, "connection closed")
            except (ConveyorError, OSError) as exc:
                logger.warning("could not give back job %s: %s", held.lease.task.id, exc)

    async def _hello(self, verb: str, arg: str) -> bool:
        """Handle the first command; ``False`` closes the connection."""
        if verb != "HELLO":
            await self._send(wire.error("HELLO first"))
            return True
        try:
            hello = wire.parse_hello(arg)
        except ProtocolError as exc:
            await self._send(wire.error(str(exc)))
            return True
        password = self.config.password
        if password and not wire.password_matches(
            password, self.salt, self.iterations, hello.pwdhash
        ):
            logger.warning("Faktory HELLO with a wrong or missing password refused")
            await self._send(wire.error("Invalid password"))
            return False  # nothing this connection sends afterwards is read, let alone stored
        self.identified, self.wid, self._holder = True, hello.wid, None
        if self.wid:
            self.server.worker_connections[self.wid] += 1
            self.server.holdings.touch(self.holder, ttl_s=self.config.beat_timeout_s)
        await self._send(wire.ok())
        return True

    async def _command(self, verb: str, arg: str) -> bytes:
        wid = self.wid
        if wid:
            self.server.holdings.touch(self.holder, ttl_s=self.config.beat_timeout_s)
            self.server.worker_commands[wid] += 1
        error = True
        try:
            answer = await self._dispatch(verb, arg)
            error = False
            return answer
        except (ProtocolError, _Refused) as exc:
            return wire.error(str(exc))
        except BrokerError as exc:
            logger.warning("Faktory %s failed: %s", verb, exc)
            return wire.error(f"broker error: {type(exc).__name__}")
        finally:
            if wid:
                commands = self.server.worker_commands
                commands[wid] -= 1
                if not commands[wid]:
                    del commands[wid]
            self.server.metrics.request("faktory", verb, error=error)
            if self.server.terminating:
                self.server.worker_news()

    async def _dispatch(self, verb: str, arg: str) -> bytes:
        if verb == "PUSH":
            await self._push([wire.parse_job(self._json(arg))])
            return wire.ok()
        if verb == "PUSHB":
            return wire.bulk(wire.compact(await self._push_batch(wire.parse_batch(arg))))
        if verb == "FETCH":
            return wire.bulk(await self._fetch(wire.parse_queues(arg)))
        if verb == "ACK":
            await self._ack(wire.parse_jid(arg))
            return wire.ok()
        if verb == "FAIL":
            failure = wire.parse_fail(arg)
            held = self._take(failure.jid)
            await self._fail(held.lease, failure.error)
            return wire.ok()
        if verb == "BEAT":
            return self._beat(wire.parse_beat(arg))
        if verb == "INFO":
            return wire.bulk(wire.compact(await self._info()))
        if verb == "FLUSH":
            await self._flush()
            return wire.ok()
        if verb == "HELLO":
            raise _Refused("already identified")
        shown = verb if verb.isprintable() else ascii(verb)
        raise _Refused(f"Unknown command {shown[:100]}")

    @staticmethod
    def _json(text: str) -> object:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise ProtocolError("the job is not valid JSON") from None

    # -- producing ---------------------------------------------------------------------------

    async def _push(self, messages: list[TaskMessage]) -> None:
        try:
            await self.broker.enqueue(messages)
            self.server.metrics.pushed("faktory", len(messages))
        except TaskIdConflictError as exc:
            raise _Refused(f"a job with jid {exc.task_id or '?'} already exists") from None
        except BrokerError:
            raise
        except ConveyorError as exc:
            raise _Refused(str(exc)) from None

    async def _push_batch(self, jobs: list[object]) -> dict[str, str]:
        rejected: dict[str, str] = {}
        messages = []
        for n, job in enumerate(jobs):
            try:
                messages.append(wire.parse_job(job))
            except ProtocolError as exc:
                jid = job.get("jid") if isinstance(job, dict) else None
                rejected[jid if isinstance(jid, str) else f"#{n}"] = str(exc)
        try:
            await self._push(messages)
        except _Refused:
            for m in messages:  # one at a time, so only the refused ones are reported
                try:
                    await self._push([m])
                except _Refused as exc:
                    rejected[m.id] = str(exc)
        return rejected

    # -- consuming ---------------------------------------------------------------------------

    async def _fetch(self, queues: list[str]) -> bytes | None:
        if self.server.terminating or self.server.quiet:
            return None
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + FETCH_WAIT_S
        while True:
            lease = await self.server.claims.claim(queues)
            if lease is not None:
                try:
                    job = self._hold(lease)
                except ConveyorError as exc:  # a stored payload that is not JSON: dead, with why
                    await self.broker.archive(lease, error=f"cannot be sent as a job: {exc}")
                else:
                    self.server.metrics.fetched("faktory", loop.time() - started, found=True)
                    return job
            remaining = deadline - loop.time()
            if remaining <= 0 or self.server.terminating:
                self.server.metrics.fetched("faktory", loop.time() - started, found=False)
                return None
            await self.broker.wait_for_tasks(queues, remaining)

    def _hold(self, lease: Lease) -> bytes:
        job = wire.job_json(lease.task)
        reserve = lease.task.timeout.total_seconds() if lease.task.timeout else None
        until = time.monotonic() + (reserve or wire.DEFAULT_RESERVE_S)
        self.server.holdings.add(self.holder, lease.task.id, Held(lease, renew_until=until))
        return job

    def _take(self, jid: str) -> Held:
        held = self.server.holdings.pop(self.holder, jid)
        if held is None:
            raise _Refused(f"job {jid} is not held by this worker")
        return held

    async def _ack(self, jid: str) -> None:
        held = self._take(jid)
        if not await self.server.acks.complete(held.lease):
            raise _Refused(f"job {jid} was lost (its reservation ran out)")
        self.server.metrics.acked("faktory")

    async def _fail(self, lease: Lease, error: str) -> None:
        task = lease.task
        self.server.metrics.failed("faktory")
        try:
            if task.max_retry == wire.DISCARD_ON_FAIL:
                await self.broker.complete([Completion(lease=lease)])
            elif task.retried + 1 > task.max_retry:
                await self.broker.archive(lease, error=error)
            else:
                await self.broker.retry(lease, error=error, delay_s=faktory_backoff(task.retried))
        except LeaseLostError:
            raise _Refused(f"job {task.id} was lost (its reservation ran out)") from None

    def _beat(self, wid: str) -> bytes:
        if self.wid and wid != self.wid:
            raise _Refused("BEAT for another worker's wid")
        self.server.holdings.touch(("faktory", wid), ttl_s=self.config.beat_timeout_s)
        if self.server.terminating:
            self.server.told_to_terminate.add(wid)
            return wire.simple('{"state":"terminate"}')
        if self.server.quiet:
            return wire.simple('{"state":"quiet"}')
        return wire.ok()

    # -- admin -------------------------------------------------------------------------------

    async def _info(self) -> dict[str, object]:
        queues: dict[str, int] = {}
        totals = {"enqueued": 0, "scheduled": 0, "retries": 0, "dead": 0, "working": 0}
        processed = failures = 0
        for name in await self.broker.list_queues():
            s = await self.broker.queue_stats(name)
            queues[name] = s.pending
            totals["enqueued"] += s.pending
            totals["scheduled"] += s.scheduled
            totals["retries"] += s.retry
            totals["dead"] += s.archived
            totals["working"] += s.active
            processed += s.processed_today
            failures += s.failed_today
        return {
            "faktory": {
                "total_processed": processed,
                "total_failures": failures,
                "total_enqueued": totals["enqueued"],
                "total_queues": len(queues),
                "queues": queues,
                "tasks": {
                    "Scheduled": {"size": totals["scheduled"]},
                    "Retries": {"size": totals["retries"]},
                    "Dead": {"size": totals["dead"]},
                    "Working": {"size": totals["working"]},
                },
            },
            "server_utc_time": datetime.now(UTC).strftime("%H:%M:%S UTC"),
            "server": {
                "description": "conveyor server (Faktory Work Protocol)",
                "faktory_version": _VERSION,
                "connections": self.server.connections,
            },
        }

    async def _flush(self) -> None:
        if not self.config.flush:
            raise _Refused("FLUSH is disabled on this server (--no-flush)")
        for name in await self.broker.list_queues():
            try:
                await self.broker.delete_queue(name, force=True)
            except QueueInUseError:  # held jobs cannot be deleted: they finish normally
                for state in (*_SETTLED, TaskState.COMPLETED):
                    await self.broker.delete_tasks(name, state)
