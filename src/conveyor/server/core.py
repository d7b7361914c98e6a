"""``TaskServer``: listeners, connection limits, lease keeping, graceful stop.

One asyncio event loop serves every connection. Each protocol (``masenko.py``, ``faktory.py``)
supplies a session class that reads request lines from its
:class:`~conveyor.server.connection.Connection` and talks to storage only through the broker
protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from conveyor.brokers.atomic import AtomicCompletion
from conveyor.brokers.protocol import Broker
from conveyor.server.batching import AckBatcher, ClaimBatcher
from conveyor.server.config import Endpoint, ServerConfig
from conveyor.server.connection import Connection
from conveyor.server.holdings import Holdings
from conveyor.server.metrics import ServerCounters, ServerMetrics

logger = logging.getLogger(__name__)


class Session(Protocol):
    """One client connection, driven to its end by :meth:`run`."""

    async def run(self) -> None:
        """Serve requests until the client leaves, misbehaves or the server stops."""
        ...


SessionFactory = Callable[["TaskServer", Connection], Session]


class TaskServer:
    """Serves masenko and/or Faktory clients over one broker.

    Example::

        server = TaskServer(broker, ServerConfig(masenko=Endpoint(host="127.0.0.1", port=0)))
        await server.start()
        await server.stop()
    """

    def __init__(
        self, broker: Broker, config: ServerConfig, *, metrics: ServerCounters | None = None
    ) -> None:
        self.broker = broker
        self.config = config
        self.metrics = ServerCounters() if metrics is None else metrics
        """Where requests and task outcomes are counted (nothing by default)."""
        self.open_connections: Counter[str] = Counter()
        """Open connections per protocol."""
        self.holdings = Holdings(broker, lease_s=config.lease_s)
        self.claims = ClaimBatcher(broker, lease_s=config.lease_s)
        """FETCHes share claims: one broker call for all waiting on the same queues."""
        self.acks = AckBatcher(broker)
        """ACKs share completion calls."""
        self.atomic = broker if isinstance(broker, AtomicCompletion) else None
        """What applies a masenko ATOMIC block all or nothing (every shipped backend can)."""
        self.stopping = asyncio.Event()
        self.quiet = False
        """Faktory: BEATs answer ``quiet`` and FETCH hands out nothing (set on SIGTSTP)."""
        self.terminating = False
        """Shutting down: FETCH hands out nothing, Faktory BEATs answer ``terminate``."""
        self.told_to_terminate: set[str] = set()
        """Faktory worker ids whose BEAT was answered ``terminate``."""
        self.worker_connections: Counter[str] = Counter()
        """Open connections per Faktory worker id."""
        self.worker_commands: Counter[str] = Counter()
        """Commands being answered per Faktory worker id (an ACK holds nothing, yet is not done)."""
        self._worker_news = asyncio.Event()
        self.addresses: dict[str, tuple[str, int]] = {}
        self._servers: list[asyncio.Server] = []
        self._sessions: set[asyncio.Task[None]] = set()
        self._refusals: set[asyncio.Task[None]] = set()
        self._keeper: asyncio.Task[None] | None = None
        self.masenko_ids = MasenkoIds()
        if isinstance(metrics, ServerMetrics):
            metrics.watch(lambda: dict(self.open_connections), self.holdings.count)

    @property
    def connections(self) -> int:
        """How many clients are connected."""
        return len(self._sessions)

    async def start(self) -> None:
        """Bind every configured port and start keeping leases."""
        from conveyor.server.faktory import FaktorySession
        from conveyor.server.masenko import MasenkoSession

        tls = self._tls_context()
        pairs: list[tuple[str, Endpoint | None, SessionFactory]] = [
            ("masenko", self.config.masenko, MasenkoSession),
            ("faktory", self.config.faktory, FaktorySession),
        ]
        loop = asyncio.get_running_loop()
        for name, endpoint, factory in pairs:
            if endpoint is None:
                continue
            server = await loop.create_server(
                self._protocol_factory(name, factory), endpoint.host, endpoint.port, ssl=tls
            )
            self._servers.append(server)
            host, port = server.sockets[0].getsockname()[:2]
            self.addresses[name] = (host, port)
            logger.info("%s protocol listening on %s:%s", name, host, port)
        for warning in self.config.public_bind_warnings():
            logger.warning("%s", warning)
        self._keeper = asyncio.create_task(self.holdings.run())

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    def _protocol_factory(self, protocol: str, factory: SessionFactory) -> Callable[[], Connection]:
        max_line = self.config.max_line_bytes

        def opened(conn: Connection) -> None:
            self._spawn_session(protocol, factory, conn)

        return lambda: Connection(max_line_bytes=max_line, on_open=opened)

    def _spawn_session(self, protocol: str, factory: SessionFactory, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        if self.stopping.is_set() or len(self._sessions) >= self.config.max_connections:
            logger.warning("connection refused: %d connections open", len(self._sessions))
            refusal = loop.create_task(self._refuse(conn))
            self._refusals.add(refusal)
            refusal.add_done_callback(self._refusals.discard)
            return
        task = loop.create_task(self._serve(protocol, factory, conn))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    @staticmethod
    async def _refuse(conn: Connection) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await conn.send(b'ERR {"msg":"too many connections"}\n')
        with contextlib.suppress(Exception):
            await conn.aclose()

    async def _serve(self, protocol: str, factory: SessionFactory, conn: Connection) -> None:
        self.open_connections[protocol] += 1
        try:
            await factory(self, conn).run()
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("connection failed")
        finally:
            self.open_connections[protocol] -= 1
            with contextlib.suppress(Exception):
                await conn.aclose()

    async def stop(self, *, grace_s: float | None = None) -> None:
        """Tell Faktory workers to terminate, then stop: every held task goes back, uncounted.

        For up to ``grace_s`` (default: the config's ``shutdown_grace_s``) FETCH hands out
        nothing and Faktory BEATs answer ``terminate``, so workers stop fetching and finish
        (ACK or FAIL) what they hold; the wait ends early once every Faktory worker connected
        has been told and holds nothing. Then the ports close, connections are dropped and
        every task still held is released (PENDING at the front, no failure counted).
        """
        self.terminating = True
        await self._grace(self.config.shutdown_grace_s if grace_s is None else grace_s)
        self.stopping.set()
        for server in self._servers:
            server.close()
        # Sessions see ``stopping`` and end at their next line; give them a moment, then cancel.
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=5.0)
        if self._keeper is not None:
            self._keeper.cancel()
            # Bounded: the keeper ends at its next round even if a broker call swallowed the
            # cancellation (see Holdings.run); stopping must not hang on it.
            await asyncio.wait({self._keeper}, timeout=5.0)
        await self.claims.aclose()
        await self.acks.aclose()
        await self.give_back_everything()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _grace(self, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while not self._workers_done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._worker_news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._worker_news.wait(), remaining)

    def worker_news(self) -> None:
        """A Faktory worker did something (a command, a closed connection): look again."""
        self._worker_news.set()

    def _workers_done(self) -> bool:
        """Whether every connected Faktory worker was told to terminate and holds nothing."""
        connected = {wid for wid, n in self.worker_connections.items() if n > 0}
        if connected - self.told_to_terminate:
            return False
        if any(self.worker_commands[wid] for wid in connected):
            return False
        return all(not self.holdings.held_by(("faktory", wid)) for wid in connected)

    async def give_back_everything(self) -> None:
        """Release every held task, PENDING at the front of its queue, no failure counted."""
        for holder in self.holdings.holders():
            for held in self.holdings.drop_holder(holder):
                try:
                    await self.broker.release(held.lease)
                except Exception as exc:  # lost lease or broker down: the lease lapses instead
                    logger.warning("could not give back task %s: %s", held.lease.task.id, exc)


class MasenkoIds:
    """masenko's global id counter: from 1, wrapping to 1 after 2^32 - 2."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        """A new id."""
        self._last = self._last + 1 if self._last < 2**32 - 2 else 1
        return self._last
