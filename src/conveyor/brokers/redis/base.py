"""What every part of the Redis broker stands on: its connection state, the script runner and
the error translation. The broker's parts are mixins of :class:`RedisBrokerBase`, so each can
use these primitives (and ``mypy --strict`` checks them) without living in one long module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript, Script
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.brokers.redis import keys
from conveyor.brokers.redis.connect import (
    NO_PRIMARY,
    RedisTarget,
    make_client,
    sentinel_refusals,
)
from conveyor.brokers.redis.direct import AsyncLines, SyncLines
from conveyor.brokers.redis.prune import prune
from conveyor.brokers.redis.replies import as_bytes, claim_script_args, claimed_leases
from conveyor.errors import BrokerError, BrokerUnavailableError, ConveyorError

if TYPE_CHECKING:
    from conveyor.message import Lease

# The logger the broker had as one module: every part of it logs under that name.
logger = logging.getLogger("conveyor.brokers.redis.broker")

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "complete",
    "complete_all",
    "fail",
    "release",
    "unclaim",
    "extend",
    "recover",
    "purge",
    "peek",
    "stats",
    "manage",
    "page",
    "delete_queue",
    "save_progress",
    "resume_progress",
    "schedule_put",
    "schedule_fire",
    "schedule_admin",
    "schedule_due",
    "schedule_forget",
    "count_running",
    "type_permit",
    "permit_hold",
    "workers",
    "cancel",
    "wf_advance",
    "wf_create",
    "wf_settle",
    "wf_outbox_create",
    "wf_outbox_change",
    "wf_manage",
    "result_watch",
    "throughput",
)
# Cluster: how often one broker object re-adds a queue it uses to the registry (another slot),
# which bounds how long a queue deleted by another client and re-created here stays unlisted.
REGISTRY_REFRESH_S = 5.0
CLOSE_CLEANUP_S = 1.0  # the most close() spends on giving back lost claims and their receipts
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, TryAgainError, OSError)
_OOM_IN_SCRIPT = "-OOM command not allowed"  # how Redis 6 words a script refused for memory
# Every exception _errors translates (the rest pass through unchanged).
_TRANSLATED = (AuthenticationError, *NO_PRIMARY, *_UNAVAILABLE, RedisError, RedisClusterException)
Client = aioredis.Redis | RedisCluster
SyncClient = redis.Redis | redis.RedisCluster


# Scripts that enforce flow control or complete leased tasks also get limits.lua's helpers,
# after lib.lua's; the workflow scripts get workflow_lib.lua's last.
_WITH_LIMITS = frozenset(
    {
        *("enqueue", "claim", "peek", "complete", "complete_all", "fail"),
        *("wf_advance", "wf_settle", "type_permit", "permit_hold"),
    }
)


def script_source(name: str) -> str:
    """The full text loaded for script ``name``: lib.lua (then limits.lua for the scripts that
    enforce limits or complete leased tasks, then workflow_lib.lua for the workflow scripts)
    followed by ``name``.lua, the helpers it never reaches blanked (see prune.py)."""
    folder = resources.files("conveyor.brokers.redis") / "scripts"
    helpers = ["lib.lua", "limits.lua"] if name in _WITH_LIMITS else ["lib.lua"]
    if name.startswith("wf_"):
        helpers.append("workflow_lib.lua")
    text = "".join((folder / f).read_text() for f in helpers)
    return prune(text, (folder / f"{name}.lua").read_text())


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that redis-py swallowed.

    Its asyncio client can return normally from a command cancelled while in flight; the
    request still stands (``Task.cancelling()``), so a loop around blocking commands calls this
    after each one instead of looping on until its own deadline.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _no_primary(error: Exception, sentinels: int) -> tuple[type[BrokerError], str]:
    """Why no Sentinel named the primary, from redis-py's error (one entry per failed Sentinel).

    Every Sentinel refusing its credentials is a configuration error, like a data server
    refusing its own (``BrokerError``: waiting won't help); anything else may pass
    (``BrokerUnavailableError``).
    """
    refused = sentinel_refusals(error)
    if refused >= sentinels:
        return BrokerError, (
            "the Sentinels refused their credentials (the URL's sentinel_username and "
            "sentinel_password options; the user and password before the @ are the data "
            "servers')"
        )
    why = f"; {refused} of {sentinels} refused their credentials" if refused else ""
    return BrokerUnavailableError, (
        f"no Sentinel named the primary (unreachable, or not monitoring the service{why})"
    )


class _ErrorGuard:
    """:meth:`RedisBrokerBase._errors`: redis-py's exceptions raised as conveyor's."""

    __slots__ = ("_broker",)

    def __init__(self, broker: RedisBrokerBase) -> None:
        self._broker = broker

    def __enter__(self) -> None:
        if self._broker._closed:  # redis-py would quietly reconnect a closed pool
            raise BrokerUnavailableError(
                f"redis broker at {self._broker._target.safe_url} is closed"
            )

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or not isinstance(exc, _TRANSLATED):
            return
        url = self._broker._target.safe_url
        if isinstance(
            exc, AuthenticationError
        ):  # a ConnectionError to redis-py; waiting won't help
            raise BrokerError(f"Redis at {url} refused the credentials: {exc}") from exc
        if isinstance(exc, NO_PRIMARY):  # a ConnectionError too, its text full of client reprs
            why_kind, why = _no_primary(exc, len(self._broker._target.hosts))
            raise why_kind(f"Redis at {url}: {why}") from exc
        if isinstance(exc, _UNAVAILABLE):
            raise BrokerUnavailableError(
                f"Redis at {url} is unavailable: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(exc, OutOfMemoryError) or _OOM_IN_SCRIPT in str(exc):
            # Redis refuses a script at its first write that needs memory, and lets it finish
            # once it has written: a refused script changed nothing. (Before 7.0 the refusal
            # comes as the script's error, not as an OOM reply.)
            raise BrokerError(
                f"Redis at {url} is out of memory (maxmemory reached): this call changed "
                "nothing; stored tasks are kept, and completing tasks frees memory"
            ) from exc
        if "CLUSTERDOWN" in str(exc) or "LOADING" in str(exc):
            raise BrokerUnavailableError(f"Redis at {url} is unavailable: {exc}") from exc
        raise BrokerError(f"Redis at {url} failed: {exc}") from exc


class ScriptBatch:
    """KEYS for a script touching several queues: one 13-key block per distinct queue."""

    def __init__(self, broker: RedisBrokerBase) -> None:
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


class LostClaim(NamedTuple):
    """A claim.lua run whose reply never came: what unclaim.lua needs to give its tasks back.

    Made for every claim before it is sent (see :meth:`RedisBrokerBase._claim_request`).
    """

    keys: list[str]
    claim_id: str
    until: float  # monotonic time its receipt (and leases) expire; nothing to give back after

    @property
    def receipt(self) -> str:
        """Its receipt key (the last of its KEYS)."""
        return self.keys[-1]


class RedisBrokerBase:
    """The state and primitives :class:`~conveyor.brokers.redis.RedisBroker` is built from.

    Args:
        target: a parsed URL (see :func:`~conveyor.brokers.redis.connect.parse_redis_url`).
    """

    def __init__(self, target: RedisTarget) -> None:
        self._target = target
        self._ns = target.namespace
        self._cluster = target.kind == "cluster"
        self._client: Client = make_client(target)
        # Script calls skip execute_command's per-call overhead (see direct.py); not on Cluster.
        self._lines = None if isinstance(self._client, RedisCluster) else AsyncLines(self._client)
        self._blocking: Client | None = None  # BLPOP gets its own connections, made on demand
        self._token = uuid.uuid4().hex  # names this object's own keys (waiter, claim receipts)
        # Only this broker object pushes here: it wakes its own BLPOP when a wait is cancelled.
        self._waiter_key = keys.waiter(self._ns, self._token)
        # Claims whose reply was lost, oldest first: given back before the next claim.
        self._lost_claims: list[LostClaim] = []
        self._receipts: set[str] = set()  # every receipt key this object used (deleted at close)
        # Receipt keys held by a claim in flight, or lost and not yet given back: no other claim
        # may write them (see _claim_request).
        self._held_receipts: set[str] = set()
        self._scripts: dict[str, AsyncScript] = {
            name: self._client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }
        self._queue_keys: dict[str, keys.QueueKeys] = {}
        # Cluster only: queue -> when this object last added it to the registry (monotonic).
        self._registered: dict[str, float] = {}
        self._closed = False
        self._guard = _ErrorGuard(self)

    # -- plumbing ------------------------------------------------------------------------------

    def _errors(self) -> _ErrorGuard:
        """The one place redis-py exceptions become conveyor's (never showing the password).

        A context manager; one object per broker (a class, not ``@contextmanager``: every
        script call enters it, and a generator per call costs several microseconds).
        """
        return self._guard

    def _keys(self, queue: str) -> keys.QueueKeys:
        found = self._queue_keys.get(queue)
        if found is None:
            found = self._queue_keys[queue] = keys.queue_keys(self._ns, queue)
        return found

    async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script by sha, loading it first if the server lacks it (NOSCRIPT).

        What redis-py's script call does, without its per-call overhead (see direct.py).
        """
        script = self._scripts[name]
        command = ("EVALSHA", script.sha, len(keys_), *keys_, *args)
        send = self._client.execute_command if self._lines is None else self._lines.call
        with self._errors():
            try:
                return await send(*command)
            except NoScriptError:
                await self._client.script_load(script.script)
                return await send(*command)

    async def _run_each(
        self, name: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Script ``name`` run once per ``(keys, args)``, all sent in one write on the kept
        connection; each reply in its place, an error reply as its conveyor exception. A
        NOSCRIPT reply ran nothing: the script is loaded and those calls sent again."""
        assert self._lines is not None
        script = self._scripts[name]
        commands = [("EVALSHA", script.sha, len(k), *k, *a) for k, a in calls]
        with self._errors():
            replies = await self._lines.call_each(commands)
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:
                await self._client.script_load(script.script)
                again = await self._lines.call_each([commands[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        return [self._translated(r) if isinstance(r, ResponseError) else r for r in replies]

    def _translated(self, error: ResponseError) -> Exception:
        """An error reply as the exception a lone call would have raised."""
        try:
            with self._errors():
                raise error
        except Exception as exc:  # handed to its caller
            return exc
        return error  # never: _errors re-raises every RedisError as conveyor's

    def _claim_request(
        self, batch: ScriptBatch, limit: int, lease_s: float
    ) -> tuple[list[str], list[Any], LostClaim]:
        """KEYS and ARGV of a claim.lua run over ``batch``, and how to give it back if lost.

        The claim leaves a receipt (this object's, in its first queue's Cluster slot) that
        :meth:`_give_back_lost_claims` uses should its reply be lost. Each claim gets a receipt
        key of its own: the lowest numbered one that no claim in flight or lost claim holds.
        Claims one after the other all use number 0; claims in flight at the same time do not
        overwrite each other's receipt (which would leave a lost one's tasks held until their
        leases lapsed). The caller must send the claim inside :meth:`_sending_claim`, which
        frees the key again.
        """
        claim_id = os.urandom(16).hex()  # as unique as uuid4, at a fraction of its cost
        queue, slot = batch.queues[0], 0
        receipt = keys.claim_receipt(self._ns, queue, self._token, slot)
        while receipt in self._held_receipts:
            slot += 1
            receipt = keys.claim_receipt(self._ns, queue, self._token, slot)
        self._held_receipts.add(receipt)
        self._receipts.add(receipt)
        keys_ = [*batch.keys, receipt]
        lost = LostClaim(keys_, claim_id, time.monotonic() + lease_s)
        # Standalone: the claimed workflow steps' records come with the claim (claim.lua).
        records = "" if self._cluster else keys.workflow_prefix(self._ns)
        args = [*claim_script_args(limit, lease_s), claim_id, *self._rate_args(batch), records]
        return keys_, args, lost

    def _claimed_leases(self, names: Sequence[str], reply: Any) -> list[Lease]:
        """The leases in a claim.lua reply (the workflow half keeps more of it)."""
        return claimed_leases(names, reply)

    @contextlib.contextmanager
    def _sending_claim(self, lost: LostClaim) -> Iterator[None]:
        """Around sending the claim ``lost`` describes (from :meth:`_claim_request`).

        When its reply is lost (``BrokerUnavailableError``, or cancelled after it may have been
        sent) it joins the claims to give back, keeping its receipt key held until then: a
        later claim must not overwrite the receipt unclaim.lua needs. Otherwise (a reply, even
        an error) the key is free for the next claim.
        """
        try:
            yield
        except (BrokerUnavailableError, asyncio.CancelledError):  # it may have run
            self._lost_claims.append(lost)
            raise
        except BaseException:
            self._held_receipts.discard(lost.receipt)
            raise
        self._held_receipts.discard(lost.receipt)

    async def _give_back_lost_claims(self) -> None:
        """Give back the tasks of claims whose reply was lost (unclaim.lua), oldest first.

        Without this they would stay ACTIVE, held by no one, until their leases lapsed, and then
        count as crashes. A claim cancelled after it was sent counts as lost too. unclaim.lua is
        safe to repeat, so a failure here just leaves the claim for the next call (and raises,
        as the claim that called it would have failed too).
        """
        while self._lost_claims:
            # Taken off first: a concurrent call must not give the same claim back (or skip one).
            lost = self._lost_claims.pop(0)
            if lost.until <= time.monotonic():
                self._held_receipts.discard(lost.receipt)
                continue  # its receipt is gone: recovery takes over
            try:
                given = int(await self._run("unclaim", lost.keys, [lost.claim_id]))
            except BaseException:
                self._lost_claims.insert(0, lost)  # its receipt key stays held
                raise
            self._held_receipts.discard(lost.receipt)
            if given:
                logger.warning("gave back %d tasks of a claim whose reply was lost", given)

    async def _drop_receipts(self) -> None:
        """Before closing: give back lost claims, then delete this object's claim receipts.

        Nothing else can use them (they are named after this object), so they need not wait to
        expire. Best effort, for at most ``CLOSE_CLEANUP_S``: a Redis that is down leaves them to
        expire with their leases rather than hold up the shutdown while reconnecting.
        """
        receipts, self._receipts = sorted(self._receipts), set()
        if not receipts:
            return
        try:
            async with asyncio.timeout(CLOSE_CLEANUP_S):
                await self._give_back_lost_claims()
                with self._errors():
                    if self._cluster:  # each receipt in its queue's slot
                        for receipt in receipts:
                            await self._client.delete(receipt)
                    else:
                        await self._client.delete(*receipts)
        except (ConveyorError, TimeoutError):
            logger.debug("could not delete claim receipts at close", exc_info=True)

    def _storing_keys(self, batch: ScriptBatch) -> list[str]:
        """KEYS of a script that stores messages: on a standalone server, plus the registry.

        The script then registers each queue it stores into in the same step (lib.lua), so
        no client keeps a stale idea of what is registered. On Cluster the registry is in
        another slot: the client registers queues after storing (:meth:`_register`).
        """
        return batch.keys if self._cluster else [*batch.keys, keys.registry(self._ns)]

    def _unregistered(self, queues: Sequence[str]) -> list[str]:
        """Cluster: queues this object has not added to the registry in the last refresh."""
        if not self._cluster:
            return []
        horizon = time.monotonic() - REGISTRY_REFRESH_S
        return [q for q in dict.fromkeys(queues) if self._registered.get(q, -1.0) < horizon]

    def _registered_now(self, queues: Sequence[str]) -> None:
        now = time.monotonic()
        for queue in queues:
            self._registered[queue] = now

    async def _register(self, queues: Sequence[str]) -> None:
        """Cluster: add queues this object uses to the registry (at most once per refresh).

        Called after storing and before claiming. A queue another client deleted is listed
        again within ``REGISTRY_REFRESH_S`` of its next use by this object; after storing, so
        a delete racing the enqueue is refused (the queue holds the task) or, when forced,
        leaves at worst an empty listed queue. Standalone servers register in the storing
        script itself (see :meth:`_storing_keys`); there this does nothing.
        """
        new = self._unregistered(queues)
        if new:
            with self._errors():
                await self._client.sadd(keys.registry(self._ns), *new)
            self._registered_now(new)

    async def _all_queues(self) -> list[str]:
        with self._errors():
            members = await self._client.smembers(keys.registry(self._ns))
        return sorted(as_bytes(m).decode() for m in members)

    def _groups(self, queues: Sequence[str]) -> list[list[str]]:
        """Queues per script call: all together, or one per call on Cluster (one slot each)."""
        unique = list(dict.fromkeys(queues))
        return [[q] for q in unique] if self._cluster else [unique]

    if TYPE_CHECKING:  # defined by RedisBroker; declared here for the mixins that call them

        async def claim(
            self, queues: Sequence[str], *, limit: int, lease_s: float
        ) -> list[Lease]: ...

        async def release(self, lease: Lease) -> None: ...

        def _rate_args(self, batch: ScriptBatch) -> list[str]: ...

        async def _refresh_rates(self) -> None: ...


def evalsha_blocking(
    client: SyncClient,
    lines: SyncLines | None,
    script: Script,
    keys_: Sequence[str],
    args: Sequence[Any],
) -> Any:
    """Run a registered script by sha, loading it first if the server lacks it (NOSCRIPT).

    On ``lines`` when given (see direct.py), else through redis-py's ``execute_command``.
    """
    command = ("EVALSHA", script.sha, len(keys_), *keys_, *args)
    send = client.execute_command if lines is None else lines.call
    try:
        return send(*command)
    except NoScriptError:
        client.script_load(script.script)
        return send(*command)
