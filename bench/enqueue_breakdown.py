"""Where one sequential single enqueue's time goes, on Redis, measured in place.

Run from the repository root: ``python bench/enqueue_breakdown.py [--redis-url URL] [--calls N]``.

A producer that waits for each acknowledgement (the bench's "enqueue single, 1 producer,
sequential") pays everything below once per task, one after the other. This times each phase
inside real enqueues (``time.perf_counter`` stamps around the steps of the broker's direct
script call, which this script repeats with stamps added) and prints the means:

- building: from ``Client.enqueue`` to the script call (options, id, payload, script arguments);
- taking the connection (and its check that the server did not close it);
- sending (packing the command, the ``send`` system call);
- waiting for the reply (Redis waking up, running the script, replying, this process waking up);
- after the reply (turning it into a ``TaskInfo``).

Then, for scale: the server's own time in the script (``INFO commandstats``), and the same
script call replayed from a bare socket with no client code around it, and a bare ``PING``.
Tasks go to a namespace of their own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis

from conveyor import Client, Task
from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.direct import KEEP_IDLE, SyncLines

PHASES = ("building", "taking the connection", "sending", "waiting for the reply", "after it")


class StampedLines:
    """``SyncLines.call`` with a time stamp between its steps (same steps, same order)."""

    def __init__(self, lines: SyncLines) -> None:
        self.lines = lines
        self.stamps: list[tuple[float, float, float, float]] = []
        self.last_command: tuple[Any, ...] = ()

    def call(self, *command: Any) -> Any:
        lines = self.lines
        t1 = time.perf_counter()
        conn = lines._take()
        t2 = time.perf_counter()
        try:
            conn.send_packed_command([hiredis.pack_command(command)])  # type: ignore[no-untyped-call]
            t3 = time.perf_counter()
            reply = conn.read_response()
            self.stamps.append((t1, t2, t3, time.perf_counter()))
            self.last_command = command
            return reply
        finally:
            if len(lines._idle) < KEEP_IDLE:
                lines._idle.append(conn)
            else:
                lines._pool.release(conn)


def phases(client: Client, stamped: StampedLines, calls: int) -> dict[str, float]:
    """Mean µs of each phase over ``calls`` enqueues (means add up), and of the whole enqueue.

    Whether Redis's work lands in "sending" or in "waiting" depends on where the kernel runs
    Redis when the send wakes it: on this CPU it can run at once, before the send returns.
    """
    tasks = [Task("bench.noop", {}) for _ in range(calls)]
    stamped.stamps.clear()
    ends = []
    start = time.perf_counter()
    for task in tasks:
        client.enqueue(task)
        ends.append(time.perf_counter())
    starts = [start, *ends[:-1]]
    rows = zip(starts, stamped.stamps, ends, strict=True)
    parts: list[list[float]] = [[] for _ in PHASES]
    totals = []
    for begin, (t1, t2, t3, t4), end in rows:
        for i, span in enumerate((t1 - begin, t2 - t1, t3 - t2, t4 - t3, end - t4)):
            parts[i].append(span * 1e6)
        totals.append((end - begin) * 1e6)
    out = {name: statistics.fmean(values) for name, values in zip(PHASES, parts, strict=True)}
    out["whole enqueue"] = statistics.fmean(totals)
    return out


def bare_replay(host: str, port: int, command: tuple[Any, ...], calls: int) -> float:
    """Median µs of the same script call sent from a bare socket (a fresh task id each time)."""
    command = tuple(c.encode() if isinstance(c, str) else c for c in command)
    heads = command[-2]  # enqueue.lua's ARGV[3]: "<shape> <id> <payload length> <key length>"
    match = re.fullmatch(rb"(\S+) (\S+) (.*)", heads)
    assert match is not None, heads
    packed = []
    for i in range(calls):
        fresh = f"replay-{uuid.uuid4().hex}-{i}".encode()
        packed.append(
            hiredis.pack_command(
                (*command[:-2], b" ".join((match[1], fresh, match[3])), command[-1])
            )
        )
    reader = hiredis.Reader()
    times = []
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for message in packed:
            start = time.perf_counter()
            sock.sendall(message)
            reply: Any = False
            while reply is False:
                reader.feed(sock.recv(65536))
                reply = reader.gets()
            times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def bare_ping(host: str, port: int, calls: int) -> float:
    times = []
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(calls):
            start = time.perf_counter()
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            sock.recv(64)
            times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def script_usec(plain: redis.Redis) -> tuple[int, int]:
    """(calls, µs) of EVALSHA so far on the server (INFO commandstats; never reset here)."""
    stats = plain.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    parts = urlsplit(args.redis_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    namespace = f"bench-breakdown-{uuid.uuid4().hex[:8]}"
    plain = redis.Redis.from_url(args.redis_url)
    try:
        with Client(f"{args.redis_url}?namespace={namespace}") as client:
            client.enqueue(Task("bench.warmup", {}))
            broker = client.broker
            assert isinstance(broker, RedisBroker)
            lines = broker._sync_side().lines
            assert lines is not None, "a standalone or Sentinel URL (Cluster has no direct calls)"
            stamped = StampedLines(lines)
            lines.call = stamped.call  # type: ignore[method-assign]
            print(f"{args.calls:,} sequential enqueues a round, mean µs; Redis {host}:{port}")
            print(f"{'round':>5} " + " ".join(f"{n:>12.12}" for n in (*PHASES, "whole enqueue")))
            for r in range(args.rounds):
                calls0, usec0 = script_usec(plain)
                found = phases(client, stamped, args.calls)
                calls1, usec1 = script_usec(plain)
                print(f"{r + 1:>5} " + " ".join(f"{v:12.1f}" for v in found.values()))
            per_script = (usec1 - usec0) / max(calls1 - calls0, 1)
            print(f"server time in the script (last round): {per_script:.1f} µs a call")
            replay = bare_replay(host, port, stamped.last_command, args.calls)
            print(f"the same script call from a bare socket: {replay:.1f} µs a round trip")
            print(f"a bare PING: {bare_ping(host, port, args.calls):.1f} µs a round trip")
    finally:
        keys = list(plain.scan_iter(match=f"{namespace}:*", count=1000))
        for i in range(0, len(keys), 500):
            plain.unlink(*keys[i : i + 500])
        plain.close()


if __name__ == "__main__":
    main()
