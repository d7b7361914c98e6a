"""``conveyor server``: push + fetch + ack cycles per second, per protocol, broker and client count.

Starts ``python -m conveyor server`` (masenko and Faktory ports) on each broker, then runs 1 and
16 concurrent clients in this process, each repeating PUSH, FETCH, ACK on one shared queue for
``--seconds``: three real round trips a cycle, each reply awaited (and checked) before the next
request goes out. Prints one line per run: full cycles per second, the FETCH round trip's p50
and p99 in milliseconds, and the CPU time per cycle (user + system) of the server process, of
this process (the clients) and of redis-server (from its ``INFO cpu``, so including whatever
else uses that Redis meanwhile). The CPU figures hold still when other work shares the machine;
the server's bounds its rate on a core of its own (1 / CPU per cycle).

    python bench/server.py                                # SQLite file and local Redis
    python bench/server.py --redis redis://127.0.0.1:6379/0 --seconds 10 --clients 1 16
    python bench/server.py --brokers redis --clients 16 --loop asyncio --repeat 3
    python bench/server.py --brokers redis --clients 16 --profile /tmp/server.prof

The clients are lean on purpose: one ``asyncio.Protocol`` per connection speaking the wire
format directly (no client library), on uvloop when it is installed, so that as little of the
machine as possible goes to them; they share it with the server (and Redis) all the same.
Redis runs use a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any

Cycle = Callable[[], Awaitable[float]]


class Conn(asyncio.Protocol):
    """One client connection with one request in flight: a line out, its whole reply back."""

    def __init__(self, resp: bool) -> None:
        self._resp = resp  # Faktory: RESP replies (``$<n>`` bulk strings); masenko: lines
        self._buffer = b""
        self._waiter: asyncio.Future[bytes] | None = None
        self._transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, port: int, *, resp: bool) -> tuple[Conn, bytes | None]:
        """A connection, and its greeting when ``resp`` (Faktory's ``+HI``)."""
        loop = asyncio.get_running_loop()
        conn = cls(resp)
        greeting = conn._waiter = loop.create_future() if resp else None
        await loop.create_connection(lambda: conn, "127.0.0.1", port)
        return conn, None if greeting is None else await greeting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\n")
        if end < 0:
            return
        if self._resp and self._buffer[:1] == b"$" and self._buffer[:3] != b"$-1":
            end += int(self._buffer[1:end]) + 2  # the payload and its CRLF
            if len(self._buffer) <= end:
                return
        reply, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
        if self._waiter is None or self._waiter.done():
            raise SystemExit(f"a reply nobody asked for: {reply[:200]!r}")
        self._waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("server closed the connection"))

    def call(self, line: bytes) -> asyncio.Future[bytes]:
        """Send ``line`` (with its line end); the future's result is the reply."""
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(line)
        return self._waiter

    async def reply(self, line: bytes) -> bytes:
        """The reply to ``line``, without the bulk string's header (Faktory)."""
        reply = await self.call(line)
        if reply[:1] == b"$" and reply[:3] != b"$-1":
            return reply[reply.index(b"\n") + 1 : -2]
        return reply

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _expect(reply: bytes, prefix: bytes, what: str) -> bytes:
    if not reply.startswith(prefix):
        raise SystemExit(f"{what}: unexpected reply {reply[:200]!r}")
    return reply


async def masenko_client(port: int) -> tuple[Cycle, Conn]:
    conn, _ = await Conn.open(port, resp=False)
    push = b'PUSH {"name":"bench","queue":"bench","payload":[1]}\n'
    fetch = b'FETCH {"queues":["bench"],"timeout":"1s"}\n'

    async def cycle() -> float:
        _expect(await conn.call(push), b"OK ", "PUSH")
        start = time.perf_counter()
        reply = _expect(await conn.call(fetch), b'OK {"id":', "FETCH")
        took = time.perf_counter() - start
        task_id = int(reply[9 : reply.index(b",", 9)])
        _expect(await conn.call(b'ACK {"id":%d}\n' % task_id), b"OK ", "ACK")
        return took

    return cycle, conn


async def faktory_client(port: int) -> tuple[Cycle, Conn]:
    conn, greeting = await Conn.open(port, resp=True)
    _expect(greeting or b"", b"+HI", "greeting")
    hello = json.dumps({"v": 2, "wid": uuid.uuid4().hex}).encode()
    _expect(await conn.call(b"HELLO " + hello + b"\r\n"), b"+OK", "HELLO")
    prefix = uuid.uuid4().hex[:12]
    numbers = itertools.count()

    async def cycle() -> float:
        jid = f"{prefix}-{next(numbers)}"
        push = f'PUSH {{"jid":"{jid}","jobtype":"bench","args":[1],"queue":"bench"}}\r\n'
        _expect(await conn.call(push.encode()), b"+OK", "PUSH")
        start = time.perf_counter()
        job = _expect(await conn.reply(b"FETCH bench\r\n"), b'{"jid":"', "FETCH")
        took = time.perf_counter() - start
        fetched = job[8 : job.index(b'"', 8)]
        _expect(await conn.call(b'ACK {"jid":"%s"}\r\n' % fetched), b"+OK", "ACK")
        return took

    return cycle, conn


async def run(protocol: str, port: int, clients: int, seconds: float) -> tuple[float, list[float]]:
    make = masenko_client if protocol == "masenko" else faktory_client
    opened = [await make(port) for _ in range(clients)]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(cycle: Cycle) -> None:
        while time.perf_counter() < deadline:
            latencies.append(await cycle())

    start = time.perf_counter()
    try:
        await asyncio.gather(*(loop(c) for c, _ in opened))
    finally:
        for _, conn in opened:
            conn.close()
    return len(latencies) / (time.perf_counter() - start), latencies


def start_server(
    url: str, loop: str, profile: str | None = None
) -> tuple[subprocess.Popen[str], dict[str, int]]:
    # Under cProfile the server writes its stats to ``profile`` when it exits (on SIGTERM).
    profiler = [] if profile is None else ["-m", "cProfile", "-o", profile]
    command = [sys.executable, *profiler, "-m", "conveyor", "server", "-b", url, "--masenko", ":0",
               "--faktory", ":0", "--log-level", "warning", "--loop", loop]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "conveyor server ready" in line:
            return proc, {k: int(v) for k, v in re.findall(r"(\w+) [\d.]+:(\d+)", line)}
    raise SystemExit(f"server did not start: {proc.wait()}")


async def delete_namespace(url: str, namespace: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{namespace}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.unlink(*keys[i : i + 500])
    finally:
        await client.aclose()


def redis_cpu_seconds(url: str) -> float | None:
    """redis-server's user + system CPU time so far (all its clients'), or ``None``."""
    import redis

    with suppress(Exception), redis.Redis.from_url(url) as client:
        info: dict[str, Any] = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (``None`` off Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report(label: str, rate: float, latencies: list[float], cpu: dict[str, float | None]) -> None:
    p50, p99 = (q * 1000 for q in statistics.quantiles(latencies, n=100)[49::49])
    used = "".join(
        f"  {who} {seconds * 1000 / len(latencies):5.3f}"
        for who, seconds in cpu.items()
        if seconds is not None
    )
    print(
        f"{label} {rate:8.0f} cycles/s  fetch p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
        + (f"  CPU ms/cycle:{used}" if used else ""),
        flush=True,
    )


def client_loop(name: str) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """``asyncio.run`` on uvloop (when installed and not ``asyncio``), else on asyncio's loop."""
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise
        else:
            return uvloop.run
    return asyncio.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--brokers", nargs="+", default=["sqlite", "redis"])
    parser.add_argument("--protocols", nargs="+", default=["masenko", "faktory"])
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                        help="the server's event loop")  # fmt: skip
    parser.add_argument("--client-loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each combination")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the server under cProfile, write its stats to FILE (one "
                        "broker) and print the top functions by own time; its CPU figures "
                        "then include the profiler's cost")  # fmt: skip
    parser.add_argument("--ports", nargs="+", metavar="PROTOCOL=PORT",
                        help="use a server already running on 127.0.0.1 (under a profiler, say); "
                        "--brokers then names its broker")  # fmt: skip
    args = parser.parse_args()
    run_clients = client_loop(args.client_loop)
    for broker in args.brokers:
        namespace = f"bench-server-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as tmp:
            url = (f"sqlite:///{tmp}/bench.db" if broker == "sqlite"
                   else f"{args.redis}?namespace={namespace}")  # fmt: skip
            if args.ports:
                proc = None
                ports = {k: int(v) for k, v in (p.split("=") for p in args.ports)}
            else:
                proc, ports = start_server(url, args.loop, args.profile)
            pid = os.getpid() if proc is None else proc.pid
            try:
                for _, protocol, clients in itertools.product(
                    range(args.repeat), args.protocols, args.clients
                ):
                    before = cpu_seconds(pid), own_cpu_seconds()
                    redis_before = redis_cpu_seconds(args.redis) if broker == "redis" else None
                    rate, lat = run_clients(run(protocol, ports[protocol], clients, args.seconds))
                    after = cpu_seconds(pid), own_cpu_seconds()
                    redis_after = redis_cpu_seconds(args.redis) if broker == "redis" else None
                    cpu: dict[str, float | None] = {
                        "server": None
                        if proc is None or before[0] is None or after[0] is None
                        else after[0] - before[0],
                        "clients": after[1] - before[1],
                        "redis": None
                        if redis_before is None or redis_after is None
                        else redis_after - redis_before,
                    }
                    report(f"{broker:6} {protocol:8} {clients:3} clients:", rate, lat, cpu)
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=30)
                if broker == "redis" and proc is not None:
                    asyncio.run(delete_namespace(args.redis, namespace))
            if args.profile and proc is not None:
                print_profile(args.profile)


def print_profile(path: str, top: int = 40) -> None:
    """The server's hottest functions by their own time, and by time including callees."""
    import pstats

    stats = pstats.Stats(path, stream=sys.stdout).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


if __name__ == "__main__":
    main()
