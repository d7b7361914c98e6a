"""Every masenko scenario script in ``scenarios/`` passes against the server (loose mode)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.conftest import SHARED_BROKERS, ServerFactory
from server.scenarios import replay

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.txt"))


@pytest.mark.parametrize("broker", SHARED_BROKERS, indirect=True)
@pytest.mark.parametrize("script", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario(script: Path, start_server: ServerFactory) -> None:
    async with start_server(heartbeat_s=3.0) as server:
        host, port = server.addresses["masenko"]
        await replay(script, host, port)


def test_every_listed_scenario_has_a_script() -> None:
    numbers = {int(p.name[:2]) for p in SCENARIOS}
    # 12 (a payload at the limit) is part of 10's script. 13, 21 and 22 need more than
    # send/recv: test_masenko.py and test_server_process.py cover them.
    assert set(range(1, 21)) - {12, 13} <= numbers
