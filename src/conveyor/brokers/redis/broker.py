"""The Redis broker: every state transition is one Lua script, run by sha on the server.

Key layout: see :mod:`conveyor.brokers.redis.keys`. Scripts: ``scripts/*.lua``, each prefixed
with ``scripts/lib.lua`` and registered once with redis-py (``EVALSHA``, reloaded on
``NOSCRIPT``). Data reaches a script only through KEYS and ARGV. Time is the server's ``TIME``.

On Redis Cluster each queue lives in one slot, so a script touches one queue: multi-queue batches
are split per queue (atomic per queue), and successors in other queues are enqueued right after
their completion rather than in the same step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript, Script
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.brokers.combiner import Combiner
from conveyor.brokers.protocol import (
    DAILY_TOTALS_KEPT_DAYS,
    LEASE_EXPIRED_ERROR,
    Broker,
    BrokerInfo,
    Capabilities,
)
from conveyor.brokers.redis import keys, server_config
from conveyor.brokers.redis.connect import (
    RedisTarget,
    make_client,
    make_sync_client,
    parse_redis_url,
)
from conveyor.brokers.redis.records import (
    claimed_fields,
    decode_record,
    enqueue_args,
    enqueued_infos,
    message_args,
    pairs,
)
from conveyor.errors import (
    BrokerError,
    BrokerUnavailableError,
    ConveyorError,
    DuplicateTaskError,
    LeaseLostError,
    QueueInUseError,
    QueueNotEmptyError,
    TaskIdConflictError,
    TaskNotFoundError,
)
from conveyor.message import (
    NAME_PATTERN,
    Completion,
    Lease,
    QueueStats,
    TaskInfo,
    TaskMessage,
    TaskState,
    validate_name,
)

__all__ = ["RedisBroker"]

logger = logging.getLogger(__name__)

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "complete",
    "fail",
    "release",
    "extend",
    "recover",
    "purge",
    "peek",
    "stats",
    "manage",
    "page",
    "delete_queue",
)
WAKE_TOKENS = 8  # as in scripts/lib.lua: several idle workers on one queue all wake
# Shorter idle waits claim at once instead: BLPOP's timeout 0 would mean "for ever".
_SHORTEST_BLPOP_S = 0.001
BATCH = 500  # tasks per recover/purge script call: bounds how long one script blocks Redis
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, TryAgainError, OSError)
Client = aioredis.Redis | RedisCluster
SyncClient = redis.Redis | redis.RedisCluster


def script_source(name: str) -> str:
    """The full text loaded for script ``name``: lib.lua followed by ``name``.lua."""
    folder = resources.files("conveyor.brokers.redis") / "scripts"
    return (folder / "lib.lua").read_text() + (folder / f"{name}.lua").read_text()


class _Batch:
    """KEYS for a script touching several queues: one 13-key block per distinct queue."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker
        self.index: dict[str, int] = {}
        self.keys: list[str] = []

    def block(self, queue: str) -> int:
        found = self.index.get(queue)
        if found is None:
            found = self.index[queue] = len(self.index) + 1
            self.keys.extend(self._broker._keys(queue).block)
        return found

    @property
    def queues(self) -> list[str]:
        return list(self.index)


class RedisBroker:
    """Tasks stored in Redis (standalone, Sentinel or Cluster); the production backend.

    Example::

        broker = RedisBroker.from_url("redis://localhost:6379/0?namespace=myapp")
        await broker.enqueue([TaskMessage(id=str(new_task_id()), type="ping")])
        leases = await broker.claim(["default"], limit=10, lease_s=30)

    Args:
        target: a parsed URL (see :func:`~conveyor.brokers.redis.connect.parse_redis_url`).
    """

    def __init__(self, target: RedisTarget) -> None:
        self._target = target
        self._ns = target.namespace
        self._cluster = target.kind == "cluster"
        self._client: Client = make_client(target)
        self._blocking: Client | None = None  # BLPOP gets its own connections, made on demand
        # Only this broker object pushes here: it wakes its own BLPOP when a wait is cancelled.
        self._waiter_key = keys.waiter(self._ns, uuid.uuid4().hex)
        self._scripts: dict[str, AsyncScript] = {
            name: self._client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }
        self._queue_keys: dict[str, keys.QueueKeys] = {}
        self._registered: set[str] = set()
        # Enqueue calls made while one enqueue.lua run is in flight share the next run.
        self._combiner: Combiner[Sequence[TaskMessage], list[TaskInfo]] = Combiner(
            self._enqueue_groups
        )
        # enqueue_blocking's synchronous client and script, made on first use.
        self._sync: SyncClient | None = None
        self._sync_enqueue: Script | None = None
        self._sync_lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> RedisBroker:
        """Create a broker from a Redis URL (see :mod:`~conveyor.brokers.redis.connect`).

        Raises:
            ConfigError: the URL is malformed (the message never contains the password).
        """
        return cls(parse_redis_url(url))

    def __repr__(self) -> str:
        return f"RedisBroker({self._target.safe_url!r}, namespace={self._ns!r})"

    @property
    def namespace(self) -> str:
        """The key namespace (every key starts with ``namespace:``)."""
        return self._ns

    @property
    def capabilities(self) -> Capabilities:
        """Shared by any number of processes and machines; persistent as Redis is configured."""
        return Capabilities(shared_across_processes=True, persistent=True)

    # -- plumbing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """The one place redis-py exceptions become conveyor's (never showing the password)."""
        if self._closed:  # redis-py would quietly reconnect a closed pool
            raise BrokerUnavailableError(f"redis broker at {self._target.safe_url} is closed")
        try:
            yield
        except AuthenticationError as exc:  # a ConnectionError to redis-py; waiting won't help
            raise BrokerError(
                f"Redis at {self._target.safe_url} refused the credentials: {exc}"
            ) from exc
        except _UNAVAILABLE as exc:
            raise BrokerUnavailableError(
                f"Redis at {self._target.safe_url} is unavailable: {type(exc).__name__}: {exc}"
            ) from exc
        except (RedisError, RedisClusterException) as exc:
            if "CLUSTERDOWN" in str(exc) or "LOADING" in str(exc):
                raise BrokerUnavailableError(
                    f"Redis at {self._target.safe_url} is unavailable: {exc}"
                ) from exc
            raise BrokerError(f"Redis at {self._target.safe_url} failed: {exc}") from exc

    def _keys(self, queue: str) -> keys.QueueKeys:
        found = self._queue_keys.get(queue)
        if found is None:
            found = self._queue_keys[queue] = keys.queue_keys(self._ns, queue)
        return found

    async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script by sha, loading it first if the server lacks it (NOSCRIPT).

        What redis-py's script call does, without its per-call overhead (see _evalsha_blocking).
        """
        script = self._scripts[name]
        command = ("EVALSHA", script.sha, len(keys_), *keys_, *args)
        with self._errors():
            try:
                return await self._client.execute_command(*command)
            except NoScriptError:
                await self._client.script_load(script.script)
                return await self._client.execute_command(*command)

    def _storing_keys(self, batch: _Batch) -> list[str]:
        """KEYS of a script that stores messages: on a standalone server, plus the registry.

        The script then registers each queue it stores into in the same step (lib.lua), so
        no client keeps a stale idea of what is registered. On Cluster the registry is in
        another slot: the client registers queues before storing (:meth:`_register`).
        """
        return batch.keys if self._cluster else [*batch.keys, keys.registry(self._ns)]

    def _unregistered(self, queues: Sequence[str]) -> list[str]:
        """Queues not yet added to the registry by this broker object."""
        return [q for q in dict.fromkeys(queues) if q not in self._registered]

    async def _register(self, queues: Sequence[str]) -> None:
        """Cluster: add queues to the registry once per broker object (SADD is idempotent).

        Standalone servers register in the storing script itself (see :meth:`_storing_keys`).
        """
        new = self._unregistered(queues)
        if new:
            with self._errors():
                await self._client.sadd(keys.registry(self._ns), *new)
            self._registered.update(new)

    async def _all_queues(self) -> list[str]:
        with self._errors():
            members = await self._client.smembers(keys.registry(self._ns))
        return sorted(_raw(m).decode() for m in members)

    def _groups(self, queues: Sequence[str]) -> list[list[str]]:
        """Queues per script call: all together, or one per call on Cluster (one slot each)."""
        unique = list(dict.fromkeys(queues))
        return [[q] for q in unique] if self._cluster else [unique]

    # -- lifecycle -----------------------------------------------------------------------------

    async def describe(self) -> BrokerInfo:
        """Check the connection and report durability (from the AOF settings) and warnings."""
        with self._errors():
            await self._client.ping()
        config: dict[str, str] = {}
        for name in server_config.CONFIG_NAMES:
            try:
                with self._errors():
                    config.update(server_config.flatten_config(await self._client.config_get(name)))
            except BrokerUnavailableError:
                raise
            except BrokerError:  # CONFIG may be disabled (managed Redis): report, carry on
                continue
        found = server_config.warnings(config)
        for warning in found:
            logger.warning("Redis broker %s: %s", self._target.safe_url, warning)
        return BrokerInfo(
            backend="redis",
            location=f"{self._target.safe_url.partition('?')[0]} (namespace {self._ns!r})",
            durability=server_config.durability(config, sentinel=self._target.kind == "sentinel"),
            warnings=tuple(found),
        )

    async def close(self) -> None:
        """Close the connection pools (idempotent); later calls raise BrokerUnavailableError."""
        if self._closed:
            return
        await self._combiner.aclose()  # combined enqueues in flight finish (or fail) first
        self._closed = True
        self._close_sync()
        for client in (self._client, self._blocking):
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
                    # A Sentinel-managed pool also holds connections to the Sentinels.
                    pool = getattr(client, "connection_pool", None)
                    manager = getattr(pool, "sentinel_manager", None)
                    for sentinel_client in getattr(manager, "sentinels", ()):
                        await sentinel_client.aclose()
        self._blocking = None

    # -- producing -----------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """Store tasks, all or nothing (per queue on Cluster); see the protocol.

        Calls made while another enqueue is in flight are combined into one script run (each
        call still all or nothing on its own), so many concurrent producers cost few round
        trips.
        """
        if not messages:
            return []
        _check_names(messages)
        if self._cluster:
            await self._register([m.queue for m in messages])
            return await self._enqueue_per_queue(messages)
        return await self._combiner(messages)

    def enqueue_blocking(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """:meth:`enqueue` for callers on plain threads: same script, outcome and errors.

        It runs on a synchronous redis-py client (made on first use, closed by :meth:`close`),
        so a thread needs no event loop and pays one plain round trip per call. Safe to call
        from several threads at once; calls are not combined with each other or with
        :meth:`enqueue` (each is one script run, all or nothing, per queue on Cluster).
        """
        if not messages:
            return []
        _check_names(messages)
        client, script = self._sync_client()
        new = self._unregistered([m.queue for m in messages]) if self._cluster else []
        if new:
            with self._errors():
                client.sadd(keys.registry(self._ns), *new)
            self._registered.update(new)
        groups = _queue_groups(messages) if self._cluster else [list(range(len(messages)))]
        outcomes: list[list[TaskInfo]] = []
        for chosen in groups:
            group = [messages[i] for i in chosen] if self._cluster else messages
            keys_, args = self._enqueue_request([group])
            with self._errors():
                reply = _evalsha_blocking(client, script, keys_, args)
            [outcome] = _enqueue_outcomes([group], reply)
            if isinstance(outcome, Exception):
                raise outcome
            outcomes.append(outcome)
        return _in_order(groups, outcomes)

    def _sync_client(self) -> tuple[SyncClient, Script]:
        """The synchronous client and its enqueue script, made once (under a lock)."""
        with self._sync_lock:
            if self._sync is None or self._sync_enqueue is None:
                with self._errors():  # a Cluster client reaches its nodes when made
                    client = make_sync_client(self._target)
                self._sync_enqueue = client.register_script(script_source("enqueue"))
                self._sync = client
            return self._sync, self._sync_enqueue

    def _close_sync(self) -> None:
        with self._sync_lock:
            client, self._sync, self._sync_enqueue = self._sync, None, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                client.close()
                # A Sentinel-managed pool also holds connections to the Sentinels.
                pool = getattr(client, "connection_pool", None)
                manager = getattr(pool, "sentinel_manager", None)
                for sentinel_client in getattr(manager, "sentinels", ()):
                    sentinel_client.close()

    async def _enqueue_groups(
        self, groups: Sequence[Sequence[TaskMessage]]
    ) -> list[list[TaskInfo] | Exception]:
        """One enqueue.lua run for several calls; each call's outcome, or its refusal."""
        keys_, args = self._enqueue_request(groups)
        return _enqueue_outcomes(groups, await self._run("enqueue", keys_, args))

    def _enqueue_request(
        self, groups: Sequence[Sequence[TaskMessage]]
    ) -> tuple[list[str], list[str | bytes]]:
        """KEYS and ARGV of one enqueue.lua run storing ``groups`` (one group per call)."""
        batch = _Batch(self)
        flat = groups[0] if len(groups) == 1 else [m for group in groups for m in group]
        args = enqueue_args(flat, [len(group) for group in groups], batch.block)
        return self._storing_keys(batch), args

    async def _enqueue_per_queue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """Cluster: one script run per queue (its slot); atomic per queue only."""
        groups = _queue_groups(messages)
        outcomes: list[list[TaskInfo]] = []
        for chosen in groups:
            [outcome] = await self._enqueue_groups([[messages[i] for i in chosen]])
            if isinstance(outcome, Exception):
                raise outcome
            outcomes.append(outcome)
        return _in_order(groups, outcomes)

    # -- consuming -----------------------------------------------------------------------------

    async def claim(self, queues: Sequence[str], *, limit: int, lease_s: float) -> list[Lease]:
        """Lease up to ``limit`` ready tasks, trying ``queues`` in order (see the protocol)."""
        leases: list[Lease] = []
        if not queues or limit <= 0:
            return leases
        for group in self._groups(queues):
            if len(leases) >= limit:
                break
            batch = _Batch(self)
            for q in group:
                batch.block(q)
            reply = await self._run("claim", batch.keys, _claim_args(limit - len(leases), lease_s))
            leases.extend(_claimed(batch.queues, reply))
        return leases

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
        wait = await self._wait_bound([batch], timeout_s)
        if wait < _SHORTEST_BLPOP_S:  # ready now or nearly
            return await self.claim(names, limit=limit, lease_s=lease_s)
        wake_keys = [self._keys(q).wake for q in names]
        blocked = asyncio.ensure_future(
            self._blocked_claim(batch, wake_keys, wait, _claim_args(limit, lease_s))
        )
        try:
            # Shielded: cancelling redis-py mid-reply would drop the connection, and with it
            # any tasks the claim has taken (until their leases lapse).
            return await asyncio.shield(blocked)
        except asyncio.CancelledError:
            await self._give_back(blocked)
            raise

    async def _blocked_claim(
        self, batch: _Batch, wake_keys: list[str], wait: float, claim_args: list[int]
    ) -> list[Lease]:
        """BLPOP then claim.lua, sent together on the blocking client; the claim's leases."""
        blocking = self._blocking_client()
        pipe = blocking.pipeline(transaction=False)
        pipe.execute_command("BLPOP", *wake_keys, self._waiter_key, wait)
        script = self._scripts["claim"]
        pipe.execute_command("EVALSHA", script.sha, len(batch.keys), *batch.keys, *claim_args)
        with self._errors():
            # The blocking client has no socket timeout; this bound catches a dead connection.
            async with asyncio.timeout(wait + 5.0):
                _, reply = await pipe.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError):  # the server lost its scripts (restart, flush)
            reply = await self._run("claim", batch.keys, claim_args)
        elif isinstance(reply, Exception):
            with self._errors():
                raise reply
        return _claimed(batch.queues, reply)

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

    def _batches(self, names: Sequence[str]) -> list[_Batch]:
        """KEYS for scripts over ``names``: one batch in all, or one per queue on Cluster."""
        batches = []
        for group in self._groups(names):
            batch = _Batch(self)
            for q in group:
                batch.block(q)
            batches.append(batch)
        return batches

    async def _wait_bound(self, batches: Sequence[_Batch], timeout_s: float) -> float:
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
            # The blocking client has no socket timeout; this bound catches a dead connection.
            async with asyncio.timeout(wait + 5.0):
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

    async def extend_leases(self, leases: Sequence[Lease], lease_s: float) -> list[bool]:
        """Push each held lease to now + ``lease_s``; ``False`` for each lost one."""
        held: dict[int, bool] = {}
        if not leases:
            return []
        for group in self._groups([lease.task.queue for lease in leases]):
            chosen = [(i, le) for i, le in enumerate(leases) if le.task.queue in group]
            batch = _Batch(self)
            args: list[Any] = [round(lease_s * 1_000_000), len(chosen)]
            for _, le in chosen:
                args.extend((batch.block(le.task.queue), le.task.id, le.token))
            reply = await self._run("extend", batch.keys, args)
            for (i, _), ok in zip(chosen, reply[1:], strict=True):
                held[i] = ok == 1
        return [held[i] for i in range(len(leases))]

    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        """Record successes and their successors, each in one step (see the protocol)."""
        if not completions:
            return []
        if self._cluster:
            return await self._complete_per_queue(completions)
        _check_names([m for c in completions for m in c.successors])
        return await self._complete_batch(completions, with_successors=True)

    async def _complete_batch(
        self, completions: Sequence[Completion], *, with_successors: bool
    ) -> list[bool]:
        ids = [c.lease.task.id for c in completions]
        if not _all_names(ids):  # the ids travel space-separated: hold them to the name rule
            for task_id in ids:
                validate_name(task_id, what="task id")
        batch = _Batch(self)
        # The completions travel as one string: one argument to encode instead of five each.
        spec = " ".join(
            f"{batch.block(c.lease.task.queue)} {c.lease.task.id} {c.lease.token} "
            f"{0 if c.result is None else 1}"
            for c in completions
        )
        results = [c.result for c in completions if c.result is not None]
        owned = [
            (i, m)
            for i, c in enumerate(completions, start=1)
            for m in (c.successors if with_successors else ())
        ]
        meta = [[i, message_args(m, batch.block(m.queue))] for i, m in owned]
        args: list[Any] = [len(completions), spec, json.dumps(meta, separators=(",", ":"))]
        args.extend(results)
        args.extend(m.payload for _, m in owned)
        reply = await self._run("complete", self._storing_keys(batch), args)
        if len(reply) >= 3 and isinstance(reply[-2], bytes):
            # Completions before the refused successor's owner were applied; it and later not.
            raise _refusal(reply[-2], owned[int(reply[-1]) - 1][1])
        return [ok == 1 for ok in reply[1:]]

    async def _complete_per_queue(self, completions: Sequence[Completion]) -> list[bool]:
        done: list[bool] = []
        for c in completions:
            local = all(m.queue == c.lease.task.queue for m in c.successors)
            ok = (await self._complete_batch([c], with_successors=local))[0]
            if ok and not local:
                # Cross-slot successors cannot share the completion's script on Cluster.
                await self.enqueue(c.successors)
            done.append(ok)
        return done

    async def _fail(self, lease: Lease, error: str, delay_s: float | None) -> None:
        delay = "" if delay_s is None else round(max(delay_s, 0.0) * 1_000_000)
        reply = await self._run(
            "fail", self._keys(lease.task.queue).block, [lease.task.id, lease.token, error, delay]
        )
        if reply != 1:
            raise LeaseLostError(task_id=lease.task.id, queue=lease.task.queue)

    async def retry(self, lease: Lease, *, error: str, delay_s: float) -> None:
        """Record a failed attempt; the task waits in RETRY for ``delay_s`` seconds."""
        await self._fail(lease, error, delay_s)

    async def archive(self, lease: Lease, *, error: str) -> None:
        """Record a failed attempt and move the task to ARCHIVED."""
        await self._fail(lease, error, None)

    async def release(self, lease: Lease) -> None:
        """Give the task back at the front of its queue; no failure counted."""
        reply = await self._run(
            "release", self._keys(lease.task.queue).block, [lease.task.id, lease.token]
        )
        if reply != 1:
            raise LeaseLostError(task_id=lease.task.id, queue=lease.task.queue)

    async def _per_queue_batches(self, name: str, args: Sequence[Any]) -> int:
        total = 0
        for queue in await self._all_queues():
            more = 1
            while more:
                count, more = await self._run(name, self._keys(queue).block, args)
                total += int(count)
        return total

    async def recover_expired(self, *, delay_s: float) -> int:
        """Fail every ACTIVE task whose lease lapsed: RETRY, or ARCHIVED when out of retries."""
        delay = round(max(delay_s, 0.0) * 1_000_000)
        return await self._per_queue_batches("recover", [delay, LEASE_EXPIRED_ERROR, BATCH])

    async def purge_expired(self) -> int:
        """Delete COMPLETED tasks past retention and old daily totals (see the protocol).

        Unique locks expire in Redis by themselves.
        """
        return await self._per_queue_batches("purge", [BATCH, DAILY_TOTALS_KEPT_DAYS])

    # -- inspecting ----------------------------------------------------------------------------

    async def list_queues(self) -> list[str]:
        """Every queue ever enqueued to or paused, sorted."""
        return await self._all_queues()

    async def queue_stats(self, queue: str) -> QueueStats:
        """Counts by state, paused flag and today's (UTC, server clock) totals."""
        r = [int(v) for v in await self._run("stats", self._keys(queue).block, [])]
        return QueueStats(
            queue=queue,
            pending=r[0],
            scheduled=r[1],
            retry=r[2],
            active=r[3],
            archived=r[4],
            completed=r[5],
            paused=bool(r[6]),
            processed_today=r[7],
            failed_today=r[8],
        )

    async def list_tasks(
        self, queue: str, state: TaskState, *, offset: int = 0, limit: int = 100
    ) -> list[TaskInfo]:
        """A page of tasks in ``state``: waiting ones by ready time, others by time entered."""
        k = self._keys(queue)
        offset, limit = max(offset, 0), max(limit, 0)
        if limit == 0:
            return []
        if state is TaskState.ACTIVE:
            # The active set is ordered by lease expiry; sort by claim time instead.
            first, last = 0, -1
        else:
            first, last = offset, offset + limit - 1
        reply = await self._run("page", k.block, [state.value, first, last])
        found = [(raw_id.decode(), pairs(flat)) for raw_id, flat in reply]
        if state is TaskState.ACTIVE:
            found.sort(key=lambda item: float(item[1].get(b"since", b"0") or 0))
            found = found[offset : offset + limit]
        return [decode_record(queue, task_id, rec) for task_id, rec in found]

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task; raises ``TaskNotFoundError`` when it does not exist."""
        k = self._keys(queue)
        with self._errors():
            reply = await self._client.hgetall(k.task_prefix + task_id)
        fields = {_raw(key): _raw(value) for key, value in reply.items()}
        if not fields:
            raise _not_found(queue, task_id)
        return decode_record(queue, task_id, fields)

    async def _manage_one(self, op: str, queue: str, task_id: str) -> None:
        reply = await self._run("manage", self._keys(queue).block, [op, "one", task_id])
        if reply == 0:
            raise _not_found(queue, task_id)
        if isinstance(reply, bytes):
            raise _not_found(queue, task_id, f" that can be {op}d (it is {reply.decode()})")

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not ACTIVE, releasing its unique lock."""
        await self._manage_one("delete", queue, task_id)

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a SCHEDULED, RETRY or ARCHIVED task PENDING, ready now."""
        await self._manage_one("run", queue, task_id)

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a PENDING, SCHEDULED or RETRY task to ARCHIVED."""
        await self._manage_one("archive", queue, task_id)

    async def _manage_all(self, op: str, queue: str, state: TaskState) -> int:
        return int(await self._run("manage", self._keys(queue).block, [op, "all", state.value]))

    async def delete_tasks(self, queue: str, state: TaskState) -> int:
        """Delete every task in ``state``; 0 for ACTIVE."""
        return await self._manage_all("delete", queue, state)

    async def run_tasks(self, queue: str, state: TaskState) -> int:
        """Make every task in a SCHEDULED, RETRY or ARCHIVED ``state`` PENDING."""
        return await self._manage_all("run", queue, state)

    async def archive_tasks(self, queue: str, state: TaskState) -> int:
        """Archive every task in a PENDING, SCHEDULED or RETRY ``state``."""
        return await self._manage_all("archive", queue, state)

    async def pause_queue(self, queue: str) -> None:
        """Stop claims from ``queue``; enqueueing still works."""
        k = self._keys(queue)
        with self._errors():
            await self._client.sadd(keys.registry(self._ns), queue)  # rare: never cached
            await self._client.set(k.paused, b"1")

    async def unpause_queue(self, queue: str) -> None:
        """Let claims from ``queue`` resume, waking idle workers."""
        k = self._keys(queue)
        with self._errors():
            await self._client.sadd(keys.registry(self._ns), queue)
            await self._client.delete(k.paused)
            await self._client.lpush(k.wake, *[b"1"] * WAKE_TOKENS)
            await self._client.ltrim(k.wake, 0, WAKE_TOKENS - 1)

    async def delete_queue(self, queue: str, *, force: bool) -> None:
        """Remove ``queue`` and everything in it in one script run (see the protocol).

        The queue's ``seq`` key stays so fencing tokens never repeat. On Cluster the registry
        is in another slot: its entry is removed right after the script, and broker objects
        that registered the queue before keep it in their ``_registered`` cache, so their next
        enqueue re-creates the queue without registering it (documented in docs/inspector.md).
        A standalone server's enqueue registers in the same step, so it has no such gap.
        """
        k = self._keys(queue)
        registry = [] if self._cluster else [keys.registry(self._ns)]
        code, count = await self._run("delete_queue", [*k.block, *registry], [int(force), queue])
        if code == 1:
            raise QueueNotEmptyError(queue=queue, tasks=int(count))
        if code == 2:
            raise QueueInUseError(queue=queue, active=int(count))
        # An enqueue through this object must add the queue to the registry again.
        self._registered.discard(queue)
        if self._cluster:
            with self._errors():
                await self._client.srem(keys.registry(self._ns), queue)


def _raw(value: bytes | str) -> bytes:
    """Replies are bytes (decode_responses is off); the str branch only satisfies the types."""
    return value if isinstance(value, bytes) else value.encode()


# Names, one per line: one regex pass checks a whole batch (NAME_PATTERN excludes newlines).
_NAME_LINES = re.compile(rf"(?:{NAME_PATTERN.pattern}\n)*")


def _all_names(values: Sequence[str]) -> bool:
    """True when every value is a valid name (False may also mean: look at each one)."""
    try:
        text = "\n".join(values) + "\n"
    except TypeError:  # not all strings
        return False
    # A newline inside a value would split it into valid-looking lines: count them.
    return text.count("\n") == len(values) and _NAME_LINES.fullmatch(text) is not None


def _evalsha_blocking(
    client: SyncClient, script: Script, keys_: Sequence[str], args: Sequence[Any]
) -> Any:
    """Run a registered script by sha, loading it first if the server lacks it (NOSCRIPT).

    What redis-py's Script call does, without its per-call overhead (measured: about a tenth of
    a single enqueue's round trip).
    """
    command = ("EVALSHA", script.sha, len(keys_), *keys_, *args)
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    except NoScriptError:
        client.script_load(script.script)
        return client.execute_command(*command)  # type: ignore[no-untyped-call]


def _check_names(messages: Sequence[TaskMessage]) -> None:
    """Refuse bad ids and types before anything is stored (enqueue.lua relies on valid ids)."""
    if _all_names([m.id for m in messages]) and _all_names([m.type for m in messages]):
        return
    for m in messages:  # find the first bad name, for validate_name's error
        validate_name(m.id, what="task id")
        validate_name(m.type, what="task type")


def _queue_groups(messages: Sequence[TaskMessage]) -> list[list[int]]:
    """Message positions per queue, queues in first-seen order (Cluster: one script each)."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(messages):
        groups.setdefault(m.queue, []).append(i)
    return list(groups.values())


def _in_order(
    groups: Sequence[Sequence[int]], outcomes: Sequence[list[TaskInfo]]
) -> list[TaskInfo]:
    """Infos back in message order from per-group results (positions as _queue_groups gives)."""
    if len(groups) == 1:
        return outcomes[0]
    infos: dict[int, TaskInfo] = {}
    for chosen, outcome in zip(groups, outcomes, strict=True):
        infos.update(zip(chosen, outcome, strict=True))
    return [infos[i] for i in range(len(infos))]


def _enqueue_outcomes(
    groups: Sequence[Sequence[TaskMessage]], reply: Any
) -> list[list[TaskInfo] | Exception]:
    """Each call's infos, or its refusal, from an enqueue.lua reply."""
    now_us = int(reply[0])
    outcomes: list[list[TaskInfo] | Exception] = []
    for group, result in zip(groups, reply[1:], strict=True):
        if result[0] == b"ok":
            outcomes.append(enqueued_infos(group, result[1], now_us))
        else:
            outcomes.append(_refusal(result[0], group[int(result[1]) - 1]))
    return outcomes


def _refusal(code: bytes, m: TaskMessage) -> Exception:
    if code == b"duplicate":
        return DuplicateTaskError(
            f"unique key {m.unique_key!r} is held in queue {m.queue!r}",
            task_id=m.id,
            queue=m.queue,
        )
    return TaskIdConflictError(
        f"task {m.id!r} already exists in queue {m.queue!r}", task_id=m.id, queue=m.queue
    )


def _not_found(queue: str, task_id: str, why: str = "") -> TaskNotFoundError:
    return TaskNotFoundError(
        f"no task {task_id!r} in queue {queue!r}{why}", task_id=task_id, queue=queue
    )


def _claim_args(limit: int, lease_s: float) -> list[int]:
    """claim.lua's ARGV."""
    return [limit, round(lease_s * 1_000_000)]


def _claimed(names: Sequence[str], reply: Any) -> list[Lease]:
    """The leases in a claim.lua reply (``names``: the queues of its KEYS blocks, in order).

    Corrupt records the script archived on the way are logged here.
    """
    expires_at = int(reply[1]) / 1_000_000
    for qi, raw_id, reason in reply[2]:
        task_id, queue = raw_id.decode(errors="replace"), names[int(qi) - 1]
        logger.error(
            "archived corrupt task record %r in queue %r: %s",
            task_id,
            queue,
            reason.decode(errors="replace"),
            extra={"task_id": task_id, "queue": queue},
        )
    leases = []
    for qi, raw_id, token, values in reply[3:]:
        info = decode_record(names[int(qi) - 1], raw_id.decode(), claimed_fields(values))
        leases.append(Lease(task=info, token=int(token), expires_at=expires_at))
    return leases


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


def _conforms(b: RedisBroker) -> Broker:
    return b
