"""Idle waits: sleeping in BLPOP on the queues' wake lists until work may be ready, and
claiming in the same round trip as the wake-up. Kept apart from the broker's state transitions
because this is the only part that holds a blocking connection and cancels commands mid-flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.brokers.redis.base import Client, RedisBrokerBase, ScriptBatch
from conveyor.brokers.redis.connect import make_client
from conveyor.errors import ConveyorError
from conveyor.message import Lease

# The logger the broker had as one module: every part of it logs under that name.
logger = logging.getLogger("conveyor.brokers.redis.broker")

# Shorter idle waits claim at once instead: BLPOP's timeout 0 would mean "for ever".
_SHORTEST_BLPOP_S = 0.001


class WaitingMixin(RedisBrokerBase):
    """``wait_for_tasks`` and ``wait_and_claim`` of :class:`~conveyor.brokers.redis.RedisBroker`."""

    async def wait_and_claim(
        self, queues: Sequence[str], *, limit: int, lease_s: float, timeout_s: float
    ) -> list[Lease]:
        """:meth:`wait_for_tasks`, then :meth:`claim`, with no round trip in between.

        The claim is pipelined behind the BLPOP on one connection, so the server runs it the
        moment a wake-up token arrives (or the wait times out) and the claimed tasks come back
        with the wake-up itself. Cancelling the call wakes its BLPOP (through this broker's own
        waiter key) and gives back whatever the claim took. On Cluster, where the wake lists
        live in other slots than the waiter key, it is the two calls one after the other.
        """
        names = list(dict.fromkeys(queues))
        if not names or limit <= 0:
            return []
        if self._cluster:
            await self.wait_for_tasks(names, timeout_s)
            return await self.claim(names, limit=limit, lease_s=lease_s)
        [batch] = self._batches(names)
        await self._refresh_rates()
        wait = await self._wait_bound([batch], timeout_s)
        if wait < _SHORTEST_BLPOP_S:  # ready now or nearly
            return await self.claim(names, limit=limit, lease_s=lease_s)
        wake_keys = [self._keys(q).wake for q in names]
        await self._give_back_lost_claims()
        blocked = asyncio.ensure_future(self._blocked_claim(batch, wake_keys, wait, limit, lease_s))
        try:
            # Shielded: cancelling redis-py mid-reply would drop the connection, and with it
            # any tasks the claim has taken (until their leases lapse).
            return await asyncio.shield(blocked)
        except asyncio.CancelledError:
            await self._give_back(blocked)
            raise

    async def _blocked_claim(
        self,
        batch: ScriptBatch,
        wake_keys: list[str],
        wait: float,
        limit: int,
        lease_s: float,
    ) -> list[Lease]:
        """BLPOP then claim.lua, sent together on the blocking client; the claim's leases."""
        blocking = self._blocking_client()
        pipe = blocking.pipeline(transaction=False)
        pipe.execute_command("BLPOP", *wake_keys, self._waiter_key, wait)
        # Made here, in the task, so that it is always sent inside _sending_claim (which frees
        # its receipt key); its receipt may outlive `lease_s` from now by the wait.
        claim_keys, claim_args, lost = self._claim_request(batch, limit, lease_s)
        lost = lost._replace(until=lost.until + wait + 5.0)
        script = self._scripts["claim"]
        pipe.execute_command("EVALSHA", script.sha, len(claim_keys), *claim_keys, *claim_args)
        with self._sending_claim(lost):  # a lost reply: it may have run, so give it back
            with self._errors():
                async with _bounded(wait + 5.0):
                    _, reply = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError):  # the server lost its scripts (restart, flush)
                reply = await self._run("claim", claim_keys, claim_args)
        if isinstance(reply, Exception):
            with self._errors():
                raise reply
        return self._claimed_leases(batch.queues, reply)

    async def _give_back(self, blocked: asyncio.Future[list[Lease]]) -> None:
        """A cancelled wait_and_claim: wake its BLPOP, release what its claim took."""
        try:
            with self._errors():
                await self._client.lpush(self._waiter_key, b"1")
            leases = await blocked
        except Exception:  # the broker is down: whatever was claimed returns by lease
            blocked.cancel()
            logger.debug("could not end a cancelled wait cleanly", exc_info=True)
            return
        finally:
            # The token is left behind when the BLPOP had already returned.
            with contextlib.suppress(Exception), self._errors():
                await self._client.delete(self._waiter_key)
        for lease in leases:
            with contextlib.suppress(ConveyorError):
                await self.release(lease)

    async def wait_for_tasks(self, queues: Sequence[str], timeout_s: float) -> None:
        """Sleep in BLPOP on the queues' wake lists until an enqueue pushes a token.

        Every change that may make a task ready (enqueue, also scheduled; retry; release; run;
        unpause) pushes tokens. First the server (``peek.lua``) says whether a task is ready
        (then return at once) and when the earliest scheduled/retry task is due (the BLPOP never
        outlasts it). No wake-up is missed: a token pushed between the check and the BLPOP stays
        in the list. Any token ends the wait without a second check (it saves a round trip on
        the idle enqueue-to-start path); a spurious return just costs the caller one claim.
        """
        names = list(dict.fromkeys(queues))
        if not names or timeout_s <= 0:
            return
        wait = await self._wait_bound(self._batches(names), timeout_s)
        if wait >= _SHORTEST_BLPOP_S:
            await self._block([self._keys(q).wake for q in names], wait)

    def _batches(self, names: Sequence[str]) -> list[ScriptBatch]:
        """KEYS for scripts over ``names``: one batch in all, or one per queue on Cluster."""
        batches = []
        for group in self._groups(names):
            batch = ScriptBatch(self)
            for q in group:
                batch.block(q)
            batches.append(batch)
        return batches

    async def _wait_bound(self, batches: Sequence[ScriptBatch], timeout_s: float) -> float:
        """How long an idle wait may last: ``timeout_s``, cut to when the earliest waiting task
        is due (0 when one is ready). ``peek.lua`` also clears the queues' stale wake tokens."""
        wait = timeout_s
        for batch in batches:
            until_ready_us = int(await self._run("peek", batch.keys, []))
            if until_ready_us >= 0:
                wait = min(wait, until_ready_us / 1_000_000)
        return wait

    async def _block(self, wake_keys: list[str], wait: float) -> None:
        """BLPOP on the wake lists for at most ``wait`` seconds, on the blocking client."""
        blocking = self._blocking_client()
        with self._errors():
            async with _bounded(wait + 5.0):
                if not self._cluster or len(wake_keys) == 1:
                    await blocking.blpop(wake_keys, timeout=wait)
                    return
                # Cluster: one BLPOP per key (each its own slot), first one back wins. The
                # others are cancelled mid-command, which leaves their connections unusable:
                # drop the whole blocking client (it is rebuilt on the next wait).
                try:
                    await _first_of([blocking.blpop([k], timeout=wait) for k in wake_keys])
                finally:
                    self._blocking = None
                    with contextlib.suppress(RedisError, OSError):
                        await blocking.aclose()

    def _blocking_client(self) -> Client:
        """The client for blocking calls (no socket timeout), made on first use."""
        if self._blocking is None:
            self._blocking = make_client(self._target, blocking=True)
        return self._blocking


async def _first_of(calls: Sequence[Any]) -> None:
    """Await the first of several coroutines to finish; cancel the rest (Cluster BLPOPs)."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def _bounded(seconds: float) -> AsyncIterator[None]:
    """A bound on a call of the blocking client, which has no socket timeout: it catches a dead
    connection. Runs out as redis-py's ``TimeoutError``, saying so (asyncio's has no message)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise RedisTimeoutError(f"no reply from Redis within {seconds:.1f} s") from exc
