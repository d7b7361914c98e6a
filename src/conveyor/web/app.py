"""``create_app``: the dashboard as a Starlette app, to serve alone or mount in your own.

Example::

    from conveyor.web import create_app
    app = create_app("redis://localhost:6379/0", read_only=True, basic_auth="ops:s3cret")
    # uvicorn module:app, or Mount("/conveyor", app) inside another Starlette app
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import resources

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from conveyor.brokers.protocol import Broker
from conveyor.config import split_broker_url
from conveyor.errors import (
    BrokerError,
    ConfigError,
    QueueInUseError,
    QueueNotEmptyError,
    ScheduleNotFoundError,
    TaskNotActiveError,
    TaskNotFoundError,
    WorkflowNotFoundError,
)
from conveyor.web import api
from conveyor.web.pages import actions, overview, queue, schedules, task, workers, workflows
from conveyor.web.render import page
from conveyor.web.security import BasicAuth, SecurityMiddleware
from conveyor.web.state import Dashboard

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

PAGE_MODULES = (overview, queue, task, workers, schedules, workflows, actions)
"""Each contributes its ``routes``; a new page is a module added here."""

_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (TaskNotFoundError, 404),
    (ScheduleNotFoundError, 404),
    (WorkflowNotFoundError, 404),
    (TaskNotActiveError, 409),
    (QueueNotEmptyError, 409),
    (QueueInUseError, 409),
    (ConfigError, 400),
    (BrokerError, 503),
)


async def _conveyor_error(request: Request, exc: Exception) -> Response:
    """Conveyor's errors as 4xx/5xx pages (or JSON under ``/api/``), message escaped."""
    status = next(code for kind, code in _STATUS if isinstance(exc, kind))
    if status == 503:
        logger.warning("dashboard: broker error: %s", exc)
    if request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/"):
        return JSONResponse({"error": str(exc)}, status_code=status)
    return page(request, "error.html", status_code=status, title="Error", message=str(exc))


def _routes() -> list[BaseRoute]:
    static = resources.files("conveyor.web") / "static"
    found: list[BaseRoute] = [Mount("/static", StaticFiles(directory=str(static)), name="static")]
    found += api.routes
    found.append(Route("/metrics", api.metrics, methods=["GET"]))
    for module in PAGE_MODULES:
        found += module.routes
    return found


def create_app(
    broker_url: str | Broker,
    *,
    read_only: bool = False,
    basic_auth: str | BasicAuth | None = None,
) -> Starlette:
    """The dashboard as a Starlette (ASGI) app.

    The broker is opened on the first request, in the serving event loop, and closed when a
    server running this app shuts down.

    Args:
        broker_url: the broker's URL (its password is never shown), or a Broker instance.
        read_only: hide every action and refuse every POST (403).
        basic_auth: ``"USER:PASSWORD"`` (or a :class:`~conveyor.web.security.BasicAuth`)
            required on every request, pages, API and static files alike.

    Raises:
        ConfigError: a malformed ``basic_auth``, or a malformed URL or unknown scheme (checked
            here, so a typo fails at start-up rather than on the first page).

    Example::

        app = create_app("sqlite:///conveyor.db", basic_auth="ops:s3cret")
    """
    if isinstance(broker_url, str):
        split_broker_url(broker_url)
    auth = BasicAuth.parse(basic_auth) if isinstance(basic_auth, str) else basic_auth
    dashboard = Dashboard(broker=broker_url, read_only=read_only)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dashboard.close()

    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(SecurityMiddleware, auth=auth)],
        exception_handlers={kind: _conveyor_error for kind, _ in _STATUS},
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    return app


def mounted(app: Starlette, prefix: str) -> Starlette:
    """``app`` served under ``prefix`` (``conveyor dashboard --prefix``); the rest is 404.

    Raises:
        ConfigError: ``prefix`` does not start with ``/``.
    """
    prefix = prefix.rstrip("/")
    if not prefix:
        return app
    if not prefix.startswith("/") or "//" in prefix:
        raise ConfigError(f"prefix must be a path such as /conveyor, not {prefix!r}")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await app.state.dashboard.close()

    async def to_prefix(_: Request) -> Response:
        return Response(status_code=307, headers={"location": prefix + "/"})

    outer = Starlette(routes=[Route(prefix, to_prefix), Mount(prefix, app)], lifespan=lifespan)
    outer.state.dashboard = app.state.dashboard
    return outer
