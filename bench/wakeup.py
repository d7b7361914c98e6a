"""How much of a sequential round trip to Redis is the machine waking up.

Run from the repository root: ``python bench/wakeup.py [--redis-url URL] [--calls N]``.

Sends ``PING`` over a plain socket and waits for each reply (``N`` round trips, the median of
three passes), first on a quiet machine, then with one and with two busy-loop processes running
beside it. On a virtual machine whose idle CPUs are slow to wake, the round trip is several
times shorter while a busy process keeps the CPUs from idling: that difference is wake-up
latency, which every sequential caller (one producer awaiting each enqueue, or the
``BRPOP`` reference loop) pays on each reply. No conveyor code runs here.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from urllib.parse import urlsplit


def round_trip_us(host: str, port: int, calls: int) -> float:
    """The median over three passes of ``calls`` sequential PINGs, in µs per round trip."""
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reply = bytearray(64)
        passes = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(calls):
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                sock.recv_into(reply)
            passes.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    target = urlsplit(args.redis_url)
    host, port = target.hostname or "127.0.0.1", target.port or 6379
    for busy in (0, 1, 2, 0):
        spin = [sys.executable, "-c", "while True: pass"]
        spinners = [subprocess.Popen(spin) for _ in range(busy)]
        try:
            time.sleep(0.3)  # let them start spinning
            rtt = round_trip_us(host, port, args.calls)
        finally:
            for proc in spinners:
                proc.kill()
                proc.wait()
        print(f"busy-loop processes beside: {busy}   PING round trip: {rtt:6.1f} µs")


if __name__ == "__main__":
    main()
