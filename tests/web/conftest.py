"""Fixtures of the dashboard tests: a broker URL (SQLite file or Redis namespace) and an HTTP
client talking to the app in process (httpx's ASGI transport: real requests, no socket)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from conveyor.inspector import AsyncInspector
from conveyor.web import create_app
from support import delete_namespace

AppClient = Callable[..., httpx.AsyncClient]


@pytest.fixture(params=("sqlite", "redis"))
async def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh broker: a real SQLite file, or a fresh namespace of the test Redis."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dashboard.db'}"
        return
    redis_url = request.getfixturevalue("redis_url")
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    try:
        yield f"{redis_url}?namespace={namespace}"
    finally:
        await delete_namespace(redis_url, namespace)


@pytest.fixture
async def inspector(broker_url: str) -> AsyncIterator[AsyncInspector]:
    """An inspector on the same broker as the dashboard, to set up and check what it shows."""
    async with AsyncInspector(broker_url) as found:
        yield found


@pytest.fixture
async def client_for() -> AsyncIterator[AppClient]:
    """Make clients for apps; every app's broker is closed after the test."""
    apps: list[Starlette] = []
    clients: list[httpx.AsyncClient] = []

    def make(app: Starlette, **options: Any) -> httpx.AsyncClient:
        apps.append(app)
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver", **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for app in apps:
        inner = app.state.dashboard if hasattr(app.state, "dashboard") else None
        if inner is not None:
            await inner.close()


@pytest.fixture
def client(broker_url: str, client_for: AppClient) -> httpx.AsyncClient:
    """A client of a dashboard with actions enabled and no auth."""
    return client_for(create_app(broker_url))


async def csrf_of(client: httpx.AsyncClient, path: str = "/queues/default") -> str:
    """Load a page (which sets the CSRF cookie) and return the token its forms carry."""
    response = await client.get(path)
    assert response.status_code == 200, response.text
    token = client.cookies.get("conveyor_csrf")
    assert token and f'value="{token}"' in response.text
    return token
