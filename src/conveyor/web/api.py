"""The JSON API under ``/api/``: the data the pages show, for scripts and the pages' live refresh.

Read-only (GET): actions are the pages' forms. Each route calls the same function as its page::

    GET /api/queues                              every queue's counts, the last hour's minutes
    GET /api/queues/{queue}                      one queue's counts and minutes
    GET /api/queues/{queue}/tasks?state=&page=&size=   a page of tasks in a state
    GET /api/queues/{queue}/tasks/{task_id}      one task, payload and result included
    GET /api/workers                             every live worker
    GET /api/schedules                           every schedule entry
    GET /api/workflows?state=&page=              a page of workflows, newest first
    GET /api/workflows/{workflow_id}             one workflow, its steps as a list and a tree

and ``GET /metrics``: the queue gauges in Prometheus' text format.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conveyor.metrics import queue_exposition
from conveyor.web.pages.overview import overview_data
from conveyor.web.pages.queue import queue_data, tasks_data
from conveyor.web.pages.schedules import schedules_data
from conveyor.web.pages.task import task_data
from conveyor.web.pages.workers import workers_data
from conveyor.web.pages.workflows import workflow_data, workflows_data
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


async def workers(request: Request) -> JSONResponse:
    """``GET /api/workers``."""
    return JSONResponse(await workers_data(Dashboard.of(request)))


async def schedules(request: Request) -> JSONResponse:
    """``GET /api/schedules``."""
    return JSONResponse(await schedules_data(Dashboard.of(request)))


async def workflows(request: Request) -> JSONResponse:
    """``GET /api/workflows``."""
    return JSONResponse(await workflows_data(request))


async def workflow(request: Request) -> JSONResponse:
    """``GET /api/workflows/{workflow_id}``."""
    found = await workflow_data(Dashboard.of(request), request.path_params["workflow_id"])
    return JSONResponse(found)


async def metrics(request: Request) -> Response:
    """``GET /metrics``: queue sizes by state, oldest pending age, live workers (Prometheus)."""
    inspector = await Dashboard.of(request).inspector()
    return Response(await queue_exposition(inspector), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/api/queues", queues, methods=["GET"]),
    Route("/api/queues/{queue}", queue, methods=["GET"]),
    Route("/api/queues/{queue}/tasks", tasks, methods=["GET"]),
    Route("/api/queues/{queue}/tasks/{task_id}", task, methods=["GET"]),
    Route("/api/workers", workers, methods=["GET"]),
    Route("/api/schedules", schedules, methods=["GET"]),
    Route("/api/workflows", workflows, methods=["GET"]),
    Route("/api/workflows/{workflow_id}", workflow, methods=["GET"]),
]
