"""``conveyor server``: push + fetch + ack cycles per second, per protocol, broker and client count.

Starts ``python -m conveyor server`` (masenko and Faktory ports) on each broker, then runs 1 and
16 concurrent clients in this process, each repeating PUSH, FETCH, ACK on one shared queue for
``--seconds``. Prints one line per run: full cycles per second, the FETCH round trip's p50
and p99 in milliseconds, and the server process's CPU time per cycle (user + system, read from
/proc on Linux): the figure that holds still when other work shares the machine, and the one
that bounds the server's rate on a core of its own (1 / CPU per cycle).

    python bench/server.py                                # SQLite file and local Redis
    python bench/server.py --redis redis://127.0.0.1:6379/0 --seconds 10 --clients 1 16
    python bench/server.py --brokers redis --clients 16 --loop asyncio

The clients share the machine with the server (and Redis): on a 2-core machine their own CPU
counts against the figures. Redis runs use a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

Cycle = Callable[[], Awaitable[float]]


class Conn:
    """One client connection: a line out, a line (or a RESP reply) back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def call(self, line: str) -> bytes:
        self.writer.write(line.encode() + b"\r\n")
        reply = await self.reader.readline()
        if reply.startswith(b"$") and reply != b"$-1\r\n":
            reply = await self.reader.readline()  # the bulk string's payload
        return reply


async def masenko_client(port: int) -> Cycle:
    conn = Conn(*await asyncio.open_connection("127.0.0.1", port))

    async def cycle() -> float:
        await conn.call('PUSH {"name":"bench","queue":"bench","payload":[1]}')
        start = time.perf_counter()
        reply = await conn.call('FETCH {"queues":["bench"],"timeout":"1s"}')
        took = time.perf_counter() - start
        task_id = json.loads(reply.split(b" ", 1)[1])["id"]
        await conn.call(f'ACK {{"id":{task_id}}}')
        return took

    return cycle


async def faktory_client(port: int) -> Cycle:
    conn = Conn(*await asyncio.open_connection("127.0.0.1", port))
    await conn.reader.readline()  # +HI
    await conn.call(json.dumps({"v": 2, "wid": uuid.uuid4().hex}).join(["HELLO ", ""]))

    async def cycle() -> float:
        jid = uuid.uuid4().hex
        await conn.call(f'PUSH {{"jid":"{jid}","jobtype":"bench","args":[1],"queue":"bench"}}')
        start = time.perf_counter()
        job = json.loads(await conn.call("FETCH bench"))
        took = time.perf_counter() - start
        await conn.call(f'ACK {{"jid":"{job["jid"]}"}}')
        return took

    return cycle


async def run(protocol: str, port: int, clients: int, seconds: float) -> tuple[float, list[float]]:
    make = masenko_client if protocol == "masenko" else faktory_client
    cycles = [await make(port) for _ in range(clients)]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(cycle: Cycle) -> None:
        while time.perf_counter() < deadline:
            latencies.append(await cycle())

    start = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in cycles))
    return len(latencies) / (time.perf_counter() - start), latencies


def start_server(url: str, loop: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    command = [sys.executable, "-m", "conveyor", "server", "-b", url, "--masenko", ":0",
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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (``None`` off Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(label: str, rate: float, latencies: list[float], cpu_s: float | None) -> None:
    p50, p99 = (q * 1000 for q in statistics.quantiles(latencies, n=100)[49::49])
    cpu = "" if cpu_s is None else f"  server CPU {cpu_s * 1000 / len(latencies):5.3f} ms/cycle"
    print(
        f"{label} {rate:8.0f} cycles/s  fetch p50 {p50:6.2f} ms  p99 {p99:6.2f} ms{cpu}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--brokers", nargs="+", default=["sqlite", "redis"])
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    args = parser.parse_args()
    for broker in args.brokers:
        namespace = f"bench-server-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as tmp:
            url = (f"sqlite:///{tmp}/bench.db" if broker == "sqlite"
                   else f"{args.redis}?namespace={namespace}")  # fmt: skip
            proc, ports = start_server(url, args.loop)
            try:
                for protocol in ("masenko", "faktory"):
                    for clients in args.clients:
                        before = cpu_seconds(proc.pid)
                        rate, lat = asyncio.run(
                            run(protocol, ports[protocol], clients, args.seconds)
                        )
                        after = cpu_seconds(proc.pid)
                        used = None if before is None or after is None else after - before
                        report(f"{broker:6} {protocol:8} {clients:3} clients:", rate, lat, used)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
                if broker == "redis":
                    asyncio.run(delete_namespace(args.redis, namespace))


if __name__ == "__main__":
    main()
