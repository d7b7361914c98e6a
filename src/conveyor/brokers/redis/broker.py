"""The Redis broker: every state transition is one Lua script, run by sha on the server.

Key layout: see :mod:`conveyor.brokers.redis.keys`. Scripts: ``scripts/*.lua``, each prefixed
with ``scripts/lib.lua`` and registered once with redis-py (``EVALSHA``, reloaded on
``NOSCRIPT``). Data reaches a script only through KEYS and ARGV. Time is the server's ``TIME``.

On Redis Cluster each queue lives in one slot, so a script touches one queue: multi-queue batches
are split per queue (atomic per queue), and successors in other queues are enqueued right after
their completion rather than in the same step. A task type's limits live in a slot of their own
there: a claim of a limited type, an extension and a way out of ACTIVE take one more step in it
(:mod:`~conveyor.brokers.redis.type_permits`).

The class is assembled from mixins over :class:`~conveyor.brokers.redis.base.RedisBrokerBase`
(connection state, script runner): idle waits in :mod:`~conveyor.brokers.redis.waiting`, upkeep
and inspection in :mod:`~conveyor.brokers.redis.inspection`, reply decoding in
:mod:`~conveyor.brokers.redis.replies`. This module keeps producing and the lease transitions.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import redis
from redis.commands.core import Script
from redis.exceptions import RedisError

from conveyor.brokers.combiner import Combiner
from conveyor.brokers.protocol import MAX_CRASH_ATTEMPTS, Broker, BrokerInfo, Capabilities
from conveyor.brokers.redis import keys, server_config
from conveyor.brokers.redis.atomic import RedisAtomicCompletion
from conveyor.brokers.redis.base import (
    RedisBrokerBase,
    ScriptBatch,
    SyncClient,
    evalsha_blocking,
    script_source,
)
from conveyor.brokers.redis.connect import (
    RESP_VERSION,
    RedisTarget,
    make_sync_client,
    parse_redis_url,
)
from conveyor.brokers.redis.direct import SyncLines
from conveyor.brokers.redis.history import HistoryMixin
from conveyor.brokers.redis.inspection import InspectionMixin
from conveyor.brokers.redis.limits import LimitsMixin
from conveyor.brokers.redis.progress import ProgressMixin
from conveyor.brokers.redis.records import enqueue_args, message_args
from conveyor.brokers.redis.replies import (
    all_names,
    check_names,
    enqueue_outcomes,
    in_order,
    queue_groups,
    refusal_error,
)
from conveyor.brokers.redis.results import RedisResults
from conveyor.brokers.redis.schedules import RedisSchedules
from conveyor.brokers.redis.throughput import ThroughputMixin
from conveyor.brokers.redis.waiting import WaitingMixin
from conveyor.brokers.redis.workers import WorkersMixin
from conveyor.brokers.redis.workflow_steps import RedisWorkflowSteps
from conveyor.brokers.redis.workflows import RedisWorkflows
from conveyor.brokers.schedules import ScheduleStore
from conveyor.brokers.throughput import Throughput
from conveyor.brokers.workers import WorkerRegistry
from conveyor.errors import BrokerError, BrokerUnavailableError, LeaseLostError
from conveyor.message import Completion, Lease, TaskInfo, TaskMessage, validate_name

__all__ = ["RedisBroker"]


class _SyncSide(NamedTuple):
    """What :meth:`RedisBroker.enqueue_blocking` runs on (made on first use)."""

    client: SyncClient
    lines: SyncLines | None  # None on Cluster
    script: Script


logger = logging.getLogger(__name__)

# Cluster: how many claims one call makes in a queue whose claimed tasks its types' limits held
# back (each claim holds back what it took before it claims on).
PERMIT_ROUNDS = 4


class RedisBroker(
    RedisWorkflowSteps,
    RedisWorkflows,
    RedisAtomicCompletion,
    WaitingMixin,
    InspectionMixin,
    ProgressMixin,
    HistoryMixin,
    RedisSchedules,
    WorkersMixin,
    ThroughputMixin,
    LimitsMixin,
    RedisResults,
    RedisBrokerBase,
):
    """Tasks stored in Redis (standalone, Sentinel or Cluster); the production backend.

    Example::

        broker = RedisBroker.from_url("redis://localhost:6379/0?namespace=myapp")
        await broker.enqueue([TaskMessage(id=str(new_task_id()), type="ping")])
        leases = await broker.claim(["default"], limit=10, lease_s=30)

    Args:
        target: a parsed URL (see :func:`~conveyor.brokers.redis.connect.parse_redis_url`).
    """

    def __init__(self, target: RedisTarget) -> None:
        super().__init__(target)
        # Enqueue calls made while one enqueue.lua run is in flight share the next run.
        self._combiner: Combiner[Sequence[TaskMessage], list[TaskInfo]] = Combiner(
            self._enqueue_groups
        )
        # enqueue_blocking's synchronous client, its direct lines and script, made on first use.
        self._sync: _SyncSide | None = None
        self._sync_lock = threading.Lock()

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

    # -- lifecycle -----------------------------------------------------------------------------

    async def describe(self) -> BrokerInfo:
        """Check the connection; report the server's version, durability (from the AOF settings)
        and warnings (an evicting or too old server, settings that could not be read)."""
        with self._errors():
            await self._client.ping()
        # HELLO is unknown before Redis 6.0; CONFIG may be disabled (managed Redis) or not
        # allowed to conveyor's ACL user: report what could not be read, and carry on.
        hello = await self._unless_refused(
            lambda: self._client.execute_command("HELLO", str(RESP_VERSION))
        )
        version = server_config.server_version(hello)
        config: dict[str, str] = {}
        for name in server_config.CONFIG_NAMES:
            reply = await self._unless_refused(functools.partial(self._client.config_get, name))
            config.update(server_config.flatten_config(reply))
        found = server_config.version_warnings(version) + server_config.warnings(config)
        for warning in found:
            logger.warning("Redis broker %s: %s", self._target.safe_url, warning)
        return BrokerInfo(
            backend="redis",
            location=(
                f"{self._target.safe_url.partition('?')[0]} (namespace {self._ns!r}, "
                f"Redis {version or 'of unknown version'})"
            ),
            durability=server_config.durability(config, sentinel=self._target.kind == "sentinel"),
            warnings=tuple(found),
        )

    async def _unless_refused(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()``'s reply, or None when Redis refuses it; an unreachable Redis still raises."""
        try:
            with self._errors():
                return await call()
        except BrokerUnavailableError:
            raise
        except BrokerError:
            return None

    async def close(self) -> None:
        """Close the connection pools (idempotent); later calls raise BrokerUnavailableError."""
        if self._closed:
            return
        await self._combiner.aclose()  # combined enqueues in flight finish (or fail) first
        await self._drop_receipts()
        self._closed = True
        self._close_sync()
        if self._lines is not None:
            await self._lines.close()
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
        check_names(messages)
        if self._cluster:
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
        check_names(messages)
        side = self._sync_side()
        if not self._cluster:
            return self._store_blocking(side, messages)
        groups = queue_groups(messages)
        outcomes: list[list[TaskInfo]] = []
        for chosen in groups:
            group = [messages[i] for i in chosen]
            outcomes.append(self._store_blocking(side, group))
            new = self._unregistered([group[0].queue])  # after storing
            if new:
                with self._errors():
                    side.client.sadd(keys.registry(self._ns), *new)
                self._registered_now(new)
        return in_order(groups, outcomes)

    def _store_blocking(self, side: _SyncSide, group: Sequence[TaskMessage]) -> list[TaskInfo]:
        """One enqueue.lua run storing ``group`` (one queue on Cluster); its infos or refusal."""
        keys_, args = self._enqueue_request([group])
        with self._errors():
            reply = evalsha_blocking(side.client, side.lines, side.script, keys_, args)
        [outcome] = enqueue_outcomes([group], reply)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _sync_side(self) -> _SyncSide:
        """The synchronous client, its lines and enqueue script, made once (under a lock)."""
        made = self._sync
        if made is not None:
            return made
        with self._sync_lock:
            if self._sync is None:
                with self._errors():  # a Cluster client reaches its nodes when made
                    client = make_sync_client(self._target)
                lines = None if isinstance(client, redis.RedisCluster) else SyncLines(client)
                script = client.register_script(script_source("enqueue"))
                self._sync = _SyncSide(client, lines, script)
            return self._sync

    def _close_sync(self) -> None:
        with self._sync_lock:
            side, self._sync = self._sync, None
        if side is not None:
            client = side.client
            with contextlib.suppress(RedisError, OSError):
                if side.lines is not None:
                    side.lines.close()
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
        return enqueue_outcomes(groups, await self._run("enqueue", keys_, args))

    def _enqueue_request(
        self, groups: Sequence[Sequence[TaskMessage]]
    ) -> tuple[list[str], list[str | bytes]]:
        """KEYS and ARGV of one enqueue.lua run storing ``groups`` (one group per call)."""
        batch = ScriptBatch(self)
        flat = groups[0] if len(groups) == 1 else [m for group in groups for m in group]
        args = enqueue_args(flat, [len(group) for group in groups], batch.block)
        return self._storing_keys(batch), args

    async def _enqueue_per_queue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """Cluster: one script run per queue (its slot); atomic per queue only."""
        groups = queue_groups(messages)
        outcomes: list[list[TaskInfo]] = []
        for chosen in groups:
            [outcome] = await self._enqueue_groups([[messages[i] for i in chosen]])
            if isinstance(outcome, Exception):
                raise outcome
            outcomes.append(outcome)
            await self._register([messages[chosen[0]].queue])
        return in_order(groups, outcomes)

    # -- consuming -----------------------------------------------------------------------------

    async def claim(self, queues: Sequence[str], *, limit: int, lease_s: float) -> list[Lease]:
        """Lease up to ``limit`` ready tasks, trying ``queues`` in order (see the protocol)."""
        leases: list[Lease] = []
        if not queues or limit <= 0:
            return leases
        if self._cluster:  # keep served queues listed (see _register)
            await self._register(queues)
        if self._lost_claims:  # (tested first: most claims have none, and skip a coroutine)
            await self._give_back_lost_claims()
        await self._refresh_rates()
        groups = [(group, 0) for group in self._groups(queues)]
        while groups and len(leases) < limit:
            group, rounds = groups.pop(0)
            batch = ScriptBatch(self)
            for q in group:
                batch.block(q)
            keys_, args, lost = self._claim_request(batch, limit - len(leases), lease_s)
            try:
                # A lost reply (BrokerUnavailableError, or cancelled: shutdown cancels a hung
                # claim) may hide a claim that ran: it is kept to be given back.
                with self._sending_claim(lost):
                    reply = await self._run("claim", keys_, args)
                    claimed = self._claimed_leases(batch.queues, reply)
                    if self._cluster and claimed:
                        # Type limits are in the types' own slots: a step there per limited
                        # type (inside: a claim cancelled meanwhile is given back too).
                        granted = await self._permit_claimed(group[0], claimed)
                        if len(granted) < len(claimed) and rounds + 1 < PERMIT_ROUNDS:
                            # Some were held back: the queue's next tasks flow past them, as
                            # a standalone claim passes over them in the same step.
                            groups.insert(0, (group, rounds + 1))
                        claimed = granted
            except BrokerError:
                # Cluster, a later queue's node failing: what earlier queues' scripts already
                # leased must reach the worker, or it would stay ACTIVE with no holder until
                # its lease lapsed (and count as a crash).
                if leases:
                    return leases
                raise
            leases.extend(claimed)
        return leases

    async def extend_leases(self, leases: Sequence[Lease], lease_s: float) -> list[bool]:
        """Push each held lease to now + ``lease_s``; ``False`` for each lost one."""
        held: dict[int, bool] = {}
        if not leases:
            return []
        for group in self._groups([lease.task.queue for lease in leases]):
            chosen = [(i, le) for i, le in enumerate(leases) if le.task.queue in group]
            batch = ScriptBatch(self)
            args: list[Any] = [round(lease_s * 1_000_000), len(chosen)]
            for _, le in chosen:
                args.extend((batch.block(le.task.queue), le.task.id, le.token))
            reply = await self._run("extend", batch.keys, args)
            for (i, _), ok in zip(chosen, reply[1:], strict=True):
                held[i] = ok == 1
            if self._cluster:  # their permits move with them, in their types' slots
                kept = [le for (i, le) in chosen if held[i]]
                await self._extend_permits(kept, int(reply[0]))
        return [held[i] for i in range(len(leases))]

    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        """Record successes and their successors, each in one step (see the protocol)."""
        if not completions:
            return []
        check_names([m for c in completions for m in c.successors])
        if self._cluster:
            return await self._complete_per_queue(completions)
        return await self._complete_batch(completions, with_successors=True)

    async def _complete_batch(
        self,
        completions: Sequence[Completion],
        *,
        with_successors: bool,
        script: str = "complete",
        release: bool = True,
    ) -> list[bool]:
        """One completion script run; on Cluster, then the type permits of its leases released
        (unless ``release`` is false: the caller releases them)."""
        ids = [c.lease.task.id for c in completions]
        if not all_names(ids):  # the ids travel space-separated: hold them to the name rule
            for task_id in ids:
                validate_name(task_id, what="task id")
        batch = ScriptBatch(self)
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
        meta_json = json.dumps(meta, separators=(",", ":")) if meta else "[]"
        args: list[Any] = [len(completions), spec, meta_json]
        args.extend(results)
        args.extend(m.payload for _, m in owned)
        reply = await self._run(script, self._storing_keys(batch), args)
        if self._cluster and release:
            await self._release_permits([c.lease for c in completions])
        if len(reply) >= 3 and isinstance(reply[-2], bytes):
            # Completions before the refused successor's owner were applied; it and later not.
            raise refusal_error(reply[-2], owned[int(reply[-1]) - 1][1])
        return [ok == 1 for ok in reply[1:]]

    async def _complete_per_queue(self, completions: Sequence[Completion]) -> list[bool]:
        done: list[bool] = []
        settled: list[Lease] = []  # their type permits are released together, at the end
        try:
            for c in completions:
                local = all(m.queue == c.lease.task.queue for m in c.successors)
                ok = (await self._complete_batch([c], with_successors=local, release=False))[0]
                settled.append(c.lease)
                if ok and not local:
                    # Cross-slot successors cannot share the completion's script on Cluster.
                    await self.enqueue(c.successors)
                done.append(ok)
        finally:
            await self._release_permits(settled)
        return done

    async def _fail(self, lease: Lease, error: str, delay_s: float | None) -> None:
        delay = "" if delay_s is None else round(max(delay_s, 0.0) * 1_000_000)
        reply = await self._run(
            "fail", self._keys(lease.task.queue).block, [lease.task.id, lease.token, error, delay]
        )
        if self._cluster:
            await self._release_permits([lease])
        if reply != 1:
            raise LeaseLostError(task_id=lease.task.id, queue=lease.task.queue)

    async def retry(self, lease: Lease, *, error: str, delay_s: float) -> None:
        """Record a failed attempt; the task waits in RETRY for ``delay_s`` seconds."""
        await self._fail(lease, error, delay_s)

    async def archive(self, lease: Lease, *, error: str) -> None:
        """Record a failed attempt and move the task to ARCHIVED."""
        await self._fail(lease, error, None)

    async def recover_expired(
        self, *, delay_s: float, max_crashes: int = MAX_CRASH_ATTEMPTS
    ) -> int:
        """Recover lapsed leases (see the protocol); a workflow step archived by it fails its
        workflow in the same script (redis/workflows.py)."""
        steps = await self.archive_expired_steps(max_crashes)
        count = await InspectionMixin.recover_expired(
            self, delay_s=delay_s, max_crashes=max_crashes
        )
        return steps + count

    async def release(self, lease: Lease) -> None:
        """Give the task back at the front of its queue; no failure counted."""
        reply = await self._run(
            "release", self._keys(lease.task.queue).block, [lease.task.id, lease.token]
        )
        if self._cluster:
            await self._release_permits([lease])
        if reply != 1:
            raise LeaseLostError(task_id=lease.task.id, queue=lease.task.queue)


def _conforms(b: RedisBroker) -> Broker:
    return b


def _stores_schedules(b: RedisBroker) -> ScheduleStore:
    return b


def _registers(b: RedisBroker) -> WorkerRegistry:
    return b


def _counts_minutes(b: RedisBroker) -> Throughput:
    return b
