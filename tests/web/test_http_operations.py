"""The dashboard's operations pages over HTTP: workers, schedules, workflows, cancelling an
active task, the pipeline log and workflow of a task, and ``/metrics``; on SQLite and Redis."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import httpx
import pytest

from conveyor.brokers import open_broker
from conveyor.brokers.progress import ProgressStore
from conveyor.brokers.workers import WorkerInfo, WorkerRegistry
from conveyor.brokers.workflows import StepOutcome, WorkflowBroker
from conveyor.client import AsyncClient
from conveyor.inspector import AsyncInspector
from conveyor.message import TaskState
from conveyor.progress import PipelineStepState, Progress, StepLog
from conveyor.web import create_app
from conveyor.web.app import mounted
from conveyor.workflows import chain, chord, signature
from web.conftest import AppClient, csrf_of
from web.states import HTML_ERROR, HTML_PAYLOAD, message, one_in_each_state

WORKER = WorkerInfo(
    id="box-1:4242:abc",
    host="box-1",
    pid=4242,
    queues={"critical": 6, "default": 3},
    concurrency=8,
    active=("t-running",),
    started_at=datetime(2026, 12, 6, 21, 0, tzinfo=UTC),
    version="9.9.9",
)


async def register(url: str) -> None:
    broker = open_broker(url)
    try:
        assert isinstance(broker, WorkerRegistry)
        await broker.register_worker(WORKER, ttl_s=60)
    finally:
        await broker.close()


async def a_workflow(url: str, queue: str = "flows") -> str:
    """A chord (two header steps, a body) then one more step, on a queue no worker serves."""
    flow = chain(
        chord(
            [
                signature("demo.part", {"n": 1}, queue=queue, retention=3600),
                signature("demo.part", {"n": 2}, queue=queue),
            ],
            signature("demo.join", queue=queue),
        ),
        signature("demo.after", HTML_PAYLOAD, queue=queue),
    )
    async with AsyncClient(url) as client:
        return (await client.enqueue_workflow(flow)).id


# -- pages and API -------------------------------------------------------------------------------


async def test_workers_page_and_api_show_every_field(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    before = (await client.get("/")).text
    assert 'Workers alive: <span data-field="workers">0</span>' in before
    await register(broker_url)

    html = (await client.get("/workers")).text
    for shown in ("box-1:4242:abc", "box-1", "4242", ">critical</a> (6)", ">default</a> (3)"):
        assert shown in html
    assert "t-running" in html and "9.9.9" in html and "2026-12-06 21:00:00" in html
    [row] = (await client.get("/api/workers")).json()["workers"]
    assert row == {**WORKER.to_dict(), "last_heartbeat": row["last_heartbeat"]}
    assert (await client.get("/api/queues")).json()["workers"] == 1
    assert 'Workers alive: <span data-field="workers">1</span>' in (await client.get("/")).text


async def test_schedules_page_pause_and_unpause(
    client: httpx.AsyncClient, inspector: AsyncInspector
) -> None:
    await inspector.add_schedule("nightly", "demo.report", {"to": "<ops>"}, cron="0 3 * * *")
    await inspector.add_schedule("often", "demo.ping", every=90, queue="pings")

    html = (await client.get("/schedules")).text
    assert 'data-schedule="nightly"' in html and "<code>0 3 * * *</code> UTC" in html
    assert "every 90.0 s" in html and "&lt;ops&gt;" in html
    rows = {s["name"]: s for s in (await client.get("/api/schedules")).json()["schedules"]}
    assert rows["often"]["queue"] == "pings" and rows["often"]["every_s"] == 90
    assert rows["nightly"]["next_fire_at"] is not None and rows["nightly"]["paused"] is False

    token = await csrf_of(client, "/schedules")
    paused = await client.post("/schedules/nightly/pause", data={"csrf": token})
    assert paused.status_code == 303
    assert paused.headers["location"] == "/schedules?done=pause-schedule"
    [nightly] = [s for s in await inspector.list_schedules() if s.name == "nightly"]
    assert nightly.paused and nightly.next_fire_at is None
    assert "Paused the schedule." in (await client.get(paused.headers["location"])).text
    assert "Resume</button>" in (await client.get("/schedules")).text

    await client.post("/schedules/nightly/unpause", data={"csrf": token})
    assert not next(s for s in await inspector.list_schedules() if s.name == "nightly").paused
    missing = await client.post("/schedules/nope/pause", data={"csrf": token})
    assert missing.status_code == 404
    bad = await client.post("/schedules/bad%20name/pause", data={"csrf": token})
    assert bad.status_code == 400


async def test_workflows_list_tree_and_cancel(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    workflow_id = await a_workflow(broker_url)

    listing = (await client.get("/api/workflows")).json()
    [row] = listing["workflows"]
    assert (row["id"], row["state"], row["steps"], row["cancellable"]) == (
        workflow_id,
        "pending",
        4,
        True,
    )
    assert (await client.get("/api/workflows?state=succeeded")).json()["workflows"] == []
    assert (await client.get("/api/workflows?state=nope")).status_code == 400
    assert workflow_id in (await client.get("/workflows?state=pending")).text

    detail = (await client.get(f"/api/workflows/{workflow_id}")).json()
    [root] = detail["tree"]
    chord_node, after = root["children"]
    header, body = chord_node["children"]
    assert (header["label"], body["label"]) == ("chord header", "chord body")
    assert [c["step"]["state"] for c in header["children"]] == ["enqueued", "enqueued"]
    assert (body["step"]["type"], body["step"]["state"]) == ("demo.join", "waiting")
    assert after["step"]["type"] == "demo.after"
    html = (await client.get(f"/workflows/{workflow_id}")).text
    assert html.count('<ul class="tree">') == 1 and 'data-step="0.0.header.0"' in html

    token = await csrf_of(client, f"/workflows/{workflow_id}")
    asked = await client.post(f"/workflows/{workflow_id}/cancel", data={"csrf": token})
    assert asked.status_code == 200 and "Yes, cancel workflow" in asked.text
    assert (await inspector.get_workflow(workflow_id)).state.value == "pending"
    done = await client.post(
        f"/workflows/{workflow_id}/cancel", data={"csrf": token, "confirm": "yes"}
    )
    assert done.status_code == 303
    assert (await inspector.get_workflow(workflow_id)).state.value == "cancelled"
    after_cancel = (await client.get(done.headers["location"])).text
    assert "Cancelled the workflow." in after_cancel and "Cancel workflow…" not in after_cancel
    assert (await client.get("/workflows/no-such-flow")).status_code == 404
    assert (await client.get("/workflows/bad%20id")).status_code == 400
    bad = await client.post("/workflows/bad%20id/cancel", data={"csrf": token})
    assert bad.status_code == 400


async def test_a_step_task_shows_its_workflow(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    workflow_id = await a_workflow(broker_url)
    broker = open_broker(broker_url)
    try:
        [lease] = await broker.claim(["flows"], limit=1, lease_s=60)
        assert isinstance(broker, WorkflowBroker)
        assert await broker.settle_step(lease, StepOutcome(succeeded=True, result=b'{"x": 1}'))
    finally:
        await broker.close()
    task_id = lease.task.id
    info = await inspector.get_task("flows", task_id)
    assert info.workflow_id == workflow_id

    shown = (await client.get(f"/api/queues/flows/tasks/{task_id}")).json()["workflow"]
    assert shown == {
        "id": workflow_id,
        "state": "running",
        "position": "0.0.header.0",
        "step_state": "succeeded",
    }
    html = (await client.get(f"/queues/flows/tasks/{task_id}")).text
    assert f'href="/workflows/{workflow_id}"' in html
    tree = (await client.get(f"/workflows/{workflow_id}")).text
    assert "→ {&#34;x&#34;: 1}" in tree
    # Every step's task knows its workflow; a plain task has none.
    [waiting] = await inspector.list_tasks("flows", TaskState.PENDING, size=1)
    assert waiting.workflow_id == workflow_id
    ids = await one_in_each_state(broker_url)
    other = (await client.get(f"/api/queues/default/tasks/{ids[TaskState.PENDING]}")).json()
    assert other["workflow"] is None and other["result_log"] == []


async def test_the_pipeline_log_is_shown(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    broker = open_broker(broker_url)
    try:
        await broker.enqueue([message("pipes", {"order": 7})])
        [lease] = await broker.claim(["pipes"], limit=1, lease_s=60)
        assert isinstance(broker, ProgressStore)
        log = [
            StepLog(step="reserve", state=PipelineStepState.SUCCEEDED, attempts=1),
            StepLog(step="charge", state=PipelineStepState.FAILED, attempts=2, error=HTML_ERROR),
        ]
        await broker.save_progress(lease, Progress(next=1, log=log).encode())
    finally:
        await broker.close()

    detail = (await client.get(f"/api/queues/pipes/tasks/{lease.task.id}")).json()
    assert detail["result_log"] == [
        {"step": "reserve", "state": "succeeded", "attempts": 1, "error": None},
        {"step": "charge", "state": "failed", "attempts": 2, "error": HTML_ERROR},
    ]
    html = (await client.get(f"/queues/pipes/tasks/{lease.task.id}")).text
    assert '<table class="result-log">' in html and "<td>charge</td>" in html
    assert "&lt;img src=x" in html and "<img src=x" not in html


# -- actions -------------------------------------------------------------------------------------


async def test_cancel_an_active_task_asks_first_then_records_the_request(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    ids = await one_in_each_state(broker_url)
    broker = open_broker(broker_url)
    try:
        await broker.enqueue([message("busy", {"n": 1})])
        [lease] = await broker.claim(["busy"], limit=1, lease_s=600)
        active = lease.task.id
        listing = (await client.get("/queues/busy?state=active")).text
        assert f"/tasks/{active}/cancel" in listing and "Cancel all" not in listing
        assert "Cancel…</button>" in (await client.get(f"/queues/busy/tasks/{active}")).text

        token = await csrf_of(client, f"/queues/busy/tasks/{active}")
        path = f"/queues/busy/tasks/{active}/cancel"
        asked = await client.post(path, data={"csrf": token})
        assert asked.status_code == 200
        assert "Yes, cancel" in asked.text and "No, go back" in asked.text
        assert isinstance(broker, WorkerRegistry)
        assert await broker.cancel_requested([lease]) == [False]
        done = await client.post(path, data={"csrf": token, "confirm": "yes"})
        assert done.status_code == 303
        notice = (await client.get(done.headers["location"])).text
        assert "Asked its worker to cancel the task." in notice
        # Stored for the worker holding the lease, which stops the task (tests/worker cover it).
        assert await broker.cancel_requested([lease]) == [True]
    finally:
        await broker.close()

    not_active = await client.post(
        f"/queues/default/tasks/{ids[TaskState.PENDING]}/cancel",
        data={"csrf": token, "confirm": "yes"},
    )
    assert not_active.status_code == 409
    bulk = await client.post("/queues/default/states/active/cancel", data={"csrf": token})
    assert bulk.status_code == 404


async def test_read_only_hides_and_refuses_the_new_actions(
    client_for: AppClient, inspector: AsyncInspector, broker_url: str
) -> None:
    ids = await one_in_each_state(broker_url)
    workflow_id = await a_workflow(broker_url)
    await inspector.add_schedule("nightly", "demo.report", cron="0 3 * * *")
    client = client_for(create_app(broker_url, read_only=True))

    pages = (
        f"/queues/default/tasks/{ids[TaskState.ACTIVE]}",
        "/queues/default?state=active",
        "/schedules",
        f"/workflows/{workflow_id}",
    )
    for path in pages:
        html = (await client.get(path)).text
        assert "<button" not in html, path
    token = client.cookies.get("conveyor_csrf")
    for path in (
        f"/queues/default/tasks/{ids[TaskState.ACTIVE]}/cancel",
        "/schedules/nightly/pause",
        f"/workflows/{workflow_id}/cancel",
    ):
        refused = await client.post(path, data={"csrf": token or "", "confirm": "yes"})
        assert refused.status_code == 403, path
    assert not (await inspector.list_schedules())[0].paused
    assert (await inspector.get_workflow(workflow_id)).state.value == "pending"


async def test_the_new_actions_need_the_csrf_token(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    workflow_id = await a_workflow(broker_url)
    await inspector.add_schedule("nightly", "demo.report", cron="0 3 * * *")
    await csrf_of(client, "/schedules")

    for path in ("/schedules/nightly/pause", f"/workflows/{workflow_id}/cancel"):
        refused = await client.post(path, data={"confirm": "yes"})
        assert refused.status_code == 403, path
    assert not (await inspector.list_schedules())[0].paused
    assert (await inspector.get_workflow(workflow_id)).state.value == "pending"


# -- /metrics ------------------------------------------------------------------------------------


async def test_metrics_serve_the_queue_gauges(client: httpx.AsyncClient, broker_url: str) -> None:
    await one_in_each_state(broker_url)
    await register(broker_url)

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for state in TaskState:
        assert f'conveyor_queue_size{{queue="default",state="{state.value}"}} 1.0' in text
    assert 'conveyor_queue_latency_seconds{queue="default"}' in text
    assert "conveyor_workers 1.0" in text and "conveyor_broker_up 1.0" in text


async def test_metrics_are_under_the_prefix_and_behind_basic_auth(
    client_for: AppClient, broker_url: str
) -> None:
    await one_in_each_state(broker_url)
    app = mounted(create_app(broker_url, basic_auth="ops:s3cret"), "/ops")
    client = client_for(app)
    credentials = base64.b64encode(b"ops:s3cret").decode()

    assert (await client.get("/ops/metrics")).status_code == 401
    scraped = await client.get("/ops/metrics", headers={"Authorization": f"Basic {credentials}"})
    assert scraped.status_code == 200 and "conveyor_queue_size" in scraped.text
    assert (await client.get("/metrics")).status_code == 404
    html = (
        await client.get("/ops/workflows", headers={"Authorization": f"Basic {credentials}"})
    ).text
    assert 'href="/ops/workers"' in html and 'href="/ops/schedules"' in html


@pytest.mark.parametrize("path", ["/workers", "/schedules", "/workflows"])
async def test_an_empty_broker_shows_empty_pages(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert 'class="empty"' in response.text


async def test_metrics_of_an_unreachable_broker_say_so(
    client_for: AppClient, redis_url: str
) -> None:
    # The test Redis has no password: every command is refused, as from a broker that is down.
    client = client_for(create_app(redis_url.replace("redis://", "redis://:wrong-secret@")))

    scraped = await client.get("/metrics")

    assert scraped.status_code == 200
    assert "conveyor_broker_up 0.0" in scraped.text and "conveyor_queue_size" not in scraped.text
    assert "wrong-secret" not in scraped.text


async def test_workflow_steps_show_their_tasks_own_state(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    workflow_id = await a_workflow(broker_url)
    broker = open_broker(broker_url)
    try:
        leases = await broker.claim(["flows"], limit=2, lease_s=30)
        retried = next(le for le in leases if le.task.id.endswith(".0"))
        await broker.retry(retried, error="flaky", delay_s=3600)
    finally:
        await broker.close()
    detail = (await client.get(f"/api/workflows/{workflow_id}")).json()
    by_position = {s["position"]: s for s in detail["step_list"]}
    first, second = by_position["0.0.header.0"], by_position["0.0.header.1"]
    assert (first["state"], first["task_state"], first["retried"]) == ("enqueued", "retry", 1)
    assert first["last_error"] == "flaky"
    assert (second["task_state"], by_position["0.0.body"]["task_state"]) == ("active", None)
    html = (await client.get(f"/workflows/{workflow_id}")).text
    assert 'data-task-state="0.0.header.0"' in html and "task retry" in html


async def test_the_retry_history_is_shown_escaped(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    broker = open_broker(broker_url)
    try:
        await broker.enqueue([message("flaky", {"n": 1})])
        [lease] = await broker.claim(["flaky"], limit=1, lease_s=60)
        await broker.retry(lease, error="ValueError: first", delay_s=0)
        [lease] = await broker.claim(["flaky"], limit=1, lease_s=60)
        await broker.archive(lease, error=HTML_ERROR)
    finally:
        await broker.close()

    detail = (await client.get(f"/api/queues/flaky/tasks/{lease.task.id}")).json()
    assert [(h["attempt"], h["error"]) for h in detail["history"]] == [
        (1, "ValueError: first"),
        (2, HTML_ERROR),
    ]
    assert all(h["failed_at"].endswith("+00:00") for h in detail["history"])
    html = (await client.get(f"/queues/flaky/tasks/{lease.task.id}")).text
    assert '<table class="history">' in html and 'data-key="2"' in html
    assert "&lt;img src=x" in html and "<img src=x" not in html
