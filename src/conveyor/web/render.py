"""Rendering pages: the Jinja2 environment (autoescape on for everything) and what every page
gets (links under the mount point, the CSRF token, read-only mode, the broker's safe label)."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from conveyor.web.security import CSRF_COOKIE, csrf_token, new_csrf_cookie
from conveyor.web.state import Dashboard


@functools.cache
def environment() -> jinja2.Environment:
    """The templates of ``web/templates``; every ``{{ value }}`` is HTML-escaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("conveyor.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seg"] = lambda value: quote(str(value), safe="")
    env.filters["query"] = lambda params: urlencode(params)
    return env


def base_path(request: Request) -> str:
    """Where the dashboard is mounted (``""`` at the root, ``/ops/conveyor`` under a prefix)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


NOTICES = {
    "run": "Made pending",
    "archive": "Archived",
    "delete": "Deleted",
    "pause": "Paused the queue",
    "unpause": "Resumed the queue",
    "delete-queue": "Deleted the queue",
    "cancel": "Asked its worker to cancel the task",
    "pause-schedule": "Paused the schedule",
    "unpause-schedule": "Resumed the schedule",
    "cancel-workflow": "Cancelled the workflow",
}


def notice(request: Request) -> str | None:
    """What the last action did, from the ``done``/``count`` the action's redirect added.

    Only these fixed words are shown, never text from the URL, so a link cannot make the
    dashboard say something it did not do.
    """
    done = NOTICES.get(request.query_params.get("done", ""))
    if done is None:
        return None
    count = request.query_params.get("count", "")
    if count.isdigit() and len(count) < 10:
        return f"{done}: {int(count)} task{'s' if int(count) != 1 else ''}."
    return f"{done}."


def page(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render ``template`` with the context every page shares, plus ``context``."""
    dashboard = Dashboard.of(request)
    html = (
        environment()
        .get_template(template)
        .render(
            base=base_path(request),
            csrf=csrf_token(request),
            read_only=dashboard.read_only,
            broker_label=dashboard.label,
            notice=notice(request),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code)
    minted = new_csrf_cookie(request)
    if minted is not None:
        response.set_cookie(
            CSRF_COOKIE,
            minted,
            path=base_path(request) or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response
