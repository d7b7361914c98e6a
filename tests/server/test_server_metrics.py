"""``conveyor server`` metrics: a scrape during a run counts what the clients did."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.server.metrics import ServerMetrics
from server.client import LineClient
from server.conftest import ServerFactory

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:port/metrics, keyed by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize("broker", ["sqlite"], indirect=True)
async def test_a_scrape_during_a_run_counts_requests_and_tasks(
    start_server: ServerFactory,
) -> None:
    metrics = ServerMetrics()
    async with start_server(metrics=metrics) as server:
        http = metrics.serve(0)
        try:
            m = await LineClient.connect(server.addresses["masenko"])
            for _ in range(3):
                await m.call('PUSH {"name":"t"}')
            assert (await m.call("FETCH"))[0] == "OK"
            assert (await m.call("FETCH"))[0] == "OK"
            assert await m.call('ACK {"id":1}') == ("OK", {})
            assert await m.call('NACK {"id":2}') == ("OK", {})
            assert (await m.call("FROB"))[0] == "ERR"
            assert (await m.call('FETCH {"queues":["none"],"timeout":1000000}')) == ("EMPTY", {})
            f = await LineClient.connect(server.addresses["faktory"])
            await f.line()  # +HI
            await f.send(b'HELLO {"v":2}\r\n')
            assert await f.line() == b"+OK\r\n"
            job = {"jid": "j1", "jobtype": "t", "args": [1], "queue": "fq"}
            await f.send(b"PUSH " + json.dumps(job).encode() + b"\r\n")
            assert await f.line() == b"+OK\r\n"

            s = await asyncio.to_thread(scrape, http.port)
        finally:
            http.close()

    req = "conveyor_server_requests_total"
    assert value(s, req, protocol="masenko", verb="PUSH") == 3
    assert value(s, req, protocol="masenko", verb="FETCH") == 3
    assert value(s, req, protocol="masenko", verb="other") == 1
    assert value(s, req, protocol="faktory", verb="PUSH") == 1
    assert value(s, req, protocol="faktory", verb="HELLO") == 1
    assert value(s, "conveyor_server_errors_total", protocol="masenko", verb="other") == 1
    assert value(s, "conveyor_server_tasks_pushed_total", protocol="masenko") == 3
    assert value(s, "conveyor_server_tasks_pushed_total", protocol="faktory") == 1
    assert value(s, "conveyor_server_tasks_fetched_total", protocol="masenko") == 2
    assert value(s, "conveyor_server_tasks_acked_total", protocol="masenko") == 1
    assert value(s, "conveyor_server_tasks_failed_total", protocol="masenko") == 1
    wait = "conveyor_server_fetch_wait_seconds_count"
    assert value(s, wait, protocol="masenko", outcome="task") == 2
    assert value(s, wait, protocol="masenko", outcome="empty") == 1
    assert value(s, "conveyor_server_connections", protocol="masenko") == 1
    assert value(s, "conveyor_server_connections", protocol="faktory") == 1
    assert value(s, "conveyor_server_tasks_held") == 0
