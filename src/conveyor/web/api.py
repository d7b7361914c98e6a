"""The JSON API under ``/api/``: the data the pages show, for scripts and the pages' live refresh.

Read-only (GET): actions are the pages' forms. Each route calls the same function as its page::

    GET /api/queues                              every queue's counts, the last hour's minutes
    GET /api/queues/{queue}                      one queue's counts and minutes
    GET /api/queues/{queue}/tasks?state=&page=&size=   a page of tasks in a state
    GET /api/queues/{queue}/tasks/{task_id}      one task, payload and result included
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conveyor.web.pages.overview import overview_data
from conveyor.web.pages.queue import queue_data, tasks_data
from conveyor.web.pages.task import task_data
from conveyor.web.state import Dashboard


async def queues(request: Request) -> JSONResponse:
    """``GET /api/queues``."""
    return JSONResponse(await overview_data(Dashboard.of(request)))


async def queue(request: Request) -> JSONResponse:
    """``GET /api/queues/{queue}``."""
    return JSONResponse(await queue_data(Dashboard.of(request), request.path_params["queue"]))


async def tasks(request: Request) -> JSONResponse:
    """``GET /api/queues/{queue}/tasks``."""
    return JSONResponse(await tasks_data(request, request.path_params["queue"]))


async def task(request: Request) -> JSONResponse:
    """``GET /api/queues/{queue}/tasks/{task_id}``."""
    params = request.path_params
    return JSONResponse(await task_data(Dashboard.of(request), params["queue"], params["task_id"]))


routes = [
    Route("/api/queues", queues, methods=["GET"]),
    Route("/api/queues/{queue}", queue, methods=["GET"]),
    Route("/api/queues/{queue}/tasks", tasks, methods=["GET"]),
    Route("/api/queues/{queue}/tasks/{task_id}", task, methods=["GET"]),
]
