"""A TCP proxy on loopback that tests can break: reset every connection, or go silent.

It runs its own event loop on a daemon thread, so it keeps forwarding while the test's loop (or
a worker) is blocked, and the test steers it with plain method calls:

- ``reset()``: close every proxied connection at once (the client sees a reset or EOF);
- ``blackhole(True)``: keep connections open but forward nothing, in either direction, and
  accept new connections without serving them; ``blackhole(False)`` heals. A connection that
  lost bytes to the blackhole stays silent for good, with its socket open (a half-open
  connection, as after a peer's crash or a NAT timeout): only the client's own timeouts can
  notice it. New connections after the heal work normally.
- ``lose_next_reply(marker)``: the next request containing ``marker`` reaches the server, but
  its connection is closed before any reply comes back (a reply lost in the network).
- ``hold_next_request(marker)``: the next request containing ``marker`` waits in the proxy (its
  connection forwards nothing more to the server) until ``release()``; other connections go on.
  It orders two requests sent on different connections.

Counters a test can read to check that a fault had bite: ``connections`` (accepted),
``silenced`` (connections the blackhole killed: it swallowed some of their bytes), ``held``
(requests held so far) and ``lost_replies`` (one entry per reply lost, in order: the bytes of
the request that carried the marker, as read in one chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` until told otherwise."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._silent = False
        self._dead: set[asyncio.StreamWriter] = set()
        self._lose_after: bytes | None = None
        self._losing: set[asyncio.StreamWriter] = set()  # client sides whose reply is lost
        self._requests: dict[asyncio.StreamWriter, bytes] = {}  # the request whose reply is lost
        self._hold: bytes | None = None
        self._gates: list[asyncio.Event] = []  # held requests wait on these
        self.port = 0
        self.connections = 0
        self.silenced = 0
        self.held = 0
        self.lost_replies: list[bytes] = []
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        if not started.wait(timeout=5):
            raise RuntimeError("fault proxy did not start")

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, pair, client=writer),
                self._pipe(up_reader, writer, pair),
                return_exceptions=True,
            )
        finally:
            for w in pair:
                self._writers.discard(w)
                self._dead.discard(w)
                w.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: set[asyncio.StreamWriter],
        client: asyncio.StreamWriter | None = None,
    ) -> None:
        while data := await reader.read(65536):
            if self._silent or writer in self._dead:
                if writer not in self._dead:
                    self.silenced += 1
                self._dead |= pair
                continue
            if client is not None and self._hold is not None and self._hold in data:
                self._hold = None
                gate = asyncio.Event()
                self._gates.append(gate)
                self.held += 1
                await gate.wait()
            if client is not None and self._lose_after is not None and self._lose_after in data:
                self._lose_after = None
                self._losing.add(client)
                self._requests[client] = data
            if writer in self._losing:  # the reply: drop it and cut the connection
                self.lost_replies.append(self._requests.pop(writer, b""))
                for w in pair:
                    w.transport.abort()
                return
            writer.write(data)
            await writer.drain()
        writer.close()

    def _call(self, fn: object) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                assert callable(fn)
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(timeout=5)

    def reset(self) -> None:
        """Close every proxied connection now."""

        def close_all() -> None:
            for w in list(self._writers):
                with contextlib.suppress(Exception):
                    w.transport.abort()

        self._call(close_all)

    def blackhole(self, on: bool) -> None:
        """Stop (``True``) or resume (``False``) forwarding."""

        def switch() -> None:
            self._silent = on

        self._call(switch)

    def lose_next_reply(self, marker: bytes) -> None:
        """Let the next request containing ``marker`` through, then lose its reply."""

        def arm() -> None:
            self._lose_after = marker

        self._call(arm)

    def hold_next_request(self, marker: bytes) -> None:
        """Keep the next request containing ``marker`` from the server until :meth:`release`."""

        def arm() -> None:
            self._hold = marker

        self._call(arm)

    def release(self) -> None:
        """Forward the requests held so far."""

        def open_gates() -> None:
            for gate in self._gates:
                gate.set()
            self._gates.clear()

        self._call(open_gates)

    @property
    def request_seen(self) -> bool:
        """Whether the request armed by :meth:`lose_next_reply` has gone through."""
        return self._lose_after is None

    def close(self) -> None:
        """Drop every connection, end the forwarding tasks and stop the proxy."""
        self.reset()

        async def drain() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(drain()))
        self._thread.join(timeout=5)
