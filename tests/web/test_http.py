"""The dashboard over HTTP: pages, JSON API, actions and security rules, on SQLite and Redis."""

from __future__ import annotations

import base64
import re

import httpx
import pytest

from conveyor import AsyncClient, Task
from conveyor.inspector import AsyncInspector
from conveyor.message import TaskState
from conveyor.web import create_app
from conveyor.web.app import mounted
from web.conftest import AppClient, csrf_of
from web.states import HTML_ERROR, one_in_each_state


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# -- pages and API -------------------------------------------------------------------------------


async def test_every_page_shows_the_tasks_of_every_state(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    ids = await one_in_each_state(broker_url)

    overview = await client.get("/")
    assert overview.status_code == 200
    assert 'data-queue="default"' in overview.text
    for state, task_id in ids.items():
        listing = await client.get(f"/queues/default?state={state.value}")
        assert listing.status_code == 200
        assert task_id in listing.text
        detail = await client.get(f"/queues/default/tasks/{task_id}")
        assert detail.status_code == 200
        assert f'data-field="state">{state.value}<' in detail.text


async def test_the_api_serves_what_the_pages_show(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    ids = await one_in_each_state(broker_url)

    queues = (await client.get("/api/queues")).json()
    [row] = queues["queues"]
    assert {s.value: row[s.value] for s in TaskState} == {s.value: 1 for s in TaskState}
    assert (row["processed_today"], row["failed_today"]) == (3, 2)
    assert len(queues["minutes"]) == 60
    assert sum(m["processed"] for m in queues["minutes"]) == 3

    one = (await client.get("/api/queues/default")).json()
    assert one["stats"] == row

    listing = (await client.get("/api/queues/default/tasks?state=retry")).json()
    assert (listing["state"], listing["total"], listing["page"], listing["pages"]) == (
        "retry",
        1,
        1,
        1,
    )
    [task] = listing["tasks"]
    assert (task["id"], task["retried"], task["last_error"]) == (
        ids[TaskState.RETRY],
        1,
        HTML_ERROR,
    )

    detail = (await client.get(f"/api/queues/default/tasks/{ids[TaskState.COMPLETED]}")).json()
    assert detail["state"] == "completed"
    assert '"ok": "<i>"' in detail["result"]
    assert "<script>" in detail["payload"]


async def test_the_task_page_and_api_show_the_headers_escaped(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    async with AsyncClient(broker_url) as producer:
        info = await producer.enqueue(Task("t", 1), headers={"origin": "<b>web</b>"})

    page = await client.get(f"/queues/default/tasks/{info.id}")
    detail = (await client.get(f"/api/queues/default/tasks/{info.id}")).json()

    shown = '<span class="name">origin</span></dt><dd data-header>&lt;b&gt;web&lt;/b&gt;<'
    assert shown in page.text
    assert detail["headers"] == {"origin": "<b>web</b>"}


async def test_pages_are_clamped_and_bad_input_is_a_clear_error(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    await one_in_each_state(broker_url)

    huge = await client.get("/api/queues/default/tasks?state=pending&page=999999&size=5000")
    assert huge.status_code == 200
    assert (huge.json()["page"], huge.json()["size"]) == (1, 100)
    bad_state = await client.get("/api/queues/default/tasks?state=nope")
    assert bad_state.status_code == 400
    assert "unknown task state" in bad_state.json()["error"]
    missing = await client.get("/api/queues/default/tasks/no-such-task")
    assert missing.status_code == 404
    page = await client.get("/queues/default/tasks/no-such-task")
    assert page.status_code == 404
    assert "no-such-task" in page.text
    bad_queue = await client.get("/queues/bad%20name")
    assert bad_queue.status_code == 400


async def test_paging_walks_a_long_state(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    from conveyor.brokers import open_broker
    from web.states import message

    broker = open_broker(broker_url)
    try:
        await broker.enqueue([message("bulk", {"i": i}) for i in range(45)])
    finally:
        await broker.close()

    seen: list[str] = []
    for number in (1, 2, 3):
        listing = (await client.get(f"/api/queues/bulk/tasks?page={number}&size=20")).json()
        assert listing["pages"] == 3
        seen += [t["id"] for t in listing["tasks"]]
    assert len(seen) == len(set(seen)) == 45
    assert (listing["has_prev"], listing["has_next"]) == (True, False)
    html = (await client.get("/queues/bulk?page=2")).text
    assert '<span data-field="page">2</span> of <span data-field="pages">3</span>' in html
    # Both neighbours shown on a middle page; the first page has no newer one.
    assert re.search(r'rel="prev" data-show-if="has_prev">', html)
    assert re.search(r'rel="next" data-show-if="has_next">', html)
    first = (await client.get("/queues/bulk?page=1")).text
    assert re.search(r'rel="prev" data-show-if="has_prev" hidden>', first)


# -- escaping and secrets ------------------------------------------------------------------------


async def test_payloads_results_and_errors_are_escaped(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    ids = await one_in_each_state(broker_url)

    for state in (TaskState.ARCHIVED, TaskState.COMPLETED):
        html = (await client.get(f"/queues/default/tasks/{ids[state]}")).text
        assert "<script>window" not in html and "<img src=x" not in html and "<i>" not in html
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    listing = (await client.get("/queues/default?state=archived")).text
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; more" in listing
    assert "<img src=x" not in listing
    # The only scripts a page loads are the app's own file: inline scripts are also forbidden.
    assert re.findall(r"<script[^>]*>", listing) == ['<script src="/static/dashboard.js" defer>']
    assert "script-src 'self'" in (await client.get("/")).headers["content-security-policy"]


async def test_a_broker_password_never_appears(client_for: AppClient, redis_url: str) -> None:
    # Redis refuses this password (the test server has none set): the error page names the
    # broker, and must not name the password.
    url = redis_url.replace("redis://", "redis://:hunter2-secret@")
    client = client_for(create_app(url))

    for path in ("/", "/queues/default", "/api/queues"):
        response = await client.get(path)
        assert response.status_code == 503, response.text
        assert "hunter2" not in response.text
    assert "***" in (await client.get("/")).text


# -- actions -------------------------------------------------------------------------------------


async def test_single_task_actions_change_the_broker(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    ids = await one_in_each_state(broker_url)
    token = await csrf_of(client)
    post = {"csrf": token, "confirm": "yes"}

    run = await client.post(f"/queues/default/tasks/{ids[TaskState.RETRY]}/run", data=post)
    assert run.status_code == 303
    assert run.headers["location"].endswith("done=run")
    assert (await inspector.get_task("default", ids[TaskState.RETRY])).state is TaskState.PENDING

    archive = f"/queues/default/tasks/{ids[TaskState.SCHEDULED]}/archive"
    assert (await client.post(archive, data=post)).status_code == 303
    archived = await inspector.get_task("default", ids[TaskState.SCHEDULED])
    assert archived.state is TaskState.ARCHIVED

    delete = f"/queues/default/tasks/{ids[TaskState.COMPLETED]}/delete"
    deleted = await client.post(delete, data=post)
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/queues/default?done=delete"
    assert ids[TaskState.COMPLETED] not in [
        t.id for t in await inspector.list_tasks("default", "completed")
    ]


async def test_bulk_actions_act_on_every_task_of_a_state(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    await one_in_each_state(broker_url)
    await one_in_each_state(broker_url)
    token = await csrf_of(client)
    post = {"csrf": token, "confirm": "yes"}

    ran = await client.post("/queues/default/states/archived/run", data=post)
    assert ran.status_code == 303
    assert "count=2" in ran.headers["location"]
    stats = await inspector.queue_info("default")
    assert (stats.archived, stats.pending) == (0, 4)

    assert (
        await client.post("/queues/default/states/pending/archive", data=post)
    ).status_code == 303
    assert (await inspector.queue_info("default")).archived == 4
    assert (
        await client.post("/queues/default/states/archived/delete", data=post)
    ).status_code == 303
    assert (await inspector.queue_info("default")).archived == 0
    # Active tasks have no bulk action: the route refuses rather than guessing.
    assert (await client.post("/queues/default/states/active/delete", data=post)).status_code == 404


async def test_pause_unpause_and_delete_a_queue(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    from conveyor.brokers import open_broker
    from web.states import message

    broker = open_broker(broker_url)
    try:
        await broker.enqueue([message("old")])
    finally:
        await broker.close()
    token = await csrf_of(client)

    assert (await client.post("/queues/old/pause", data={"csrf": token})).status_code == 303
    assert (await inspector.queue_info("old")).paused is True
    assert "Resume queue" in (await client.get("/queues/old")).text
    assert (await client.post("/queues/old/unpause", data={"csrf": token})).status_code == 303
    assert (await inspector.queue_info("old")).paused is False

    gone = await client.post("/queues/old/delete", data={"csrf": token, "confirm": "yes"})
    assert (gone.status_code, gone.headers["location"]) == (303, "/?done=delete-queue")
    assert "old" not in await inspector.queues()


async def test_destructive_actions_ask_for_confirmation_first(
    client: httpx.AsyncClient, inspector: AsyncInspector, broker_url: str
) -> None:
    ids = await one_in_each_state(broker_url)
    token = await csrf_of(client)
    path = f"/queues/default/tasks/{ids[TaskState.PENDING]}/delete"

    asked = await client.post(path, data={"csrf": token})

    assert asked.status_code == 200
    assert "Are you sure?" in asked.text
    assert f'action="{path}"' in asked.text and 'name="confirm" value="yes"' in asked.text
    assert (await inspector.get_task("default", ids[TaskState.PENDING])).state is TaskState.PENDING
    # The confirmed form does it.
    assert (await client.post(path, data={"csrf": token, "confirm": "yes"})).status_code == 303
    assert (await inspector.queue_info("default")).pending == 0


async def test_a_task_gone_meanwhile_is_a_404_not_a_crash(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    token = await csrf_of(client)
    gone = await client.post(
        "/queues/default/tasks/never-was/run", data={"csrf": token, "confirm": "yes"}
    )
    assert gone.status_code == 404
    assert "never-was" in gone.text


async def test_next_only_returns_to_the_dashboard(
    client: httpx.AsyncClient, broker_url: str
) -> None:
    token = await csrf_of(client)
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        response = await client.post("/queues/q/pause", data={"csrf": token, "next": evil})
        assert response.status_code == 303
        assert response.headers["location"] == "/queues/q?done=pause"


# -- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        ({}, {}),
        ({"csrf": "forged-token-value"}, {}),
        ("from-cookie", {"Origin": "http://evil.example"}),
    ],
    ids=["no-token", "wrong-token", "foreign-origin"],
)
async def test_a_post_without_the_csrf_token_changes_nothing(
    client: httpx.AsyncClient,
    inspector: AsyncInspector,
    broker_url: str,
    form: dict[str, str] | str,
    headers: dict[str, str],
) -> None:
    ids = await one_in_each_state(broker_url)
    token = await csrf_of(client)
    data = (
        {"csrf": token, "confirm": "yes"} if form == "from-cookie" else {**form, "confirm": "yes"}
    )
    before = await inspector.queue_info("default")

    responses = [
        await client.post("/queues/default/pause", data=data, headers=headers),
        await client.post("/queues/default/states/archived/delete", data=data, headers=headers),
        await client.post(
            f"/queues/default/tasks/{ids[TaskState.RETRY]}/run", data=data, headers=headers
        ),
    ]

    assert [r.status_code for r in responses] == [403, 403, 403]
    assert await inspector.queue_info("default") == before


async def test_a_post_without_the_cookie_is_refused(
    client_for: AppClient, inspector: AsyncInspector, broker_url: str
) -> None:
    # A token copied from a page does not help a client that lacks the browser's cookie.
    token = await csrf_of(client_for(create_app(broker_url)))
    other = client_for(create_app(broker_url))

    refused = await other.post("/queues/default/pause", data={"csrf": token})

    assert refused.status_code == 403
    assert (await inspector.queue_info("default")).paused is False


# -- read-only -----------------------------------------------------------------------------------


async def test_read_only_hides_and_refuses_every_action(
    client_for: AppClient, inspector: AsyncInspector, broker_url: str
) -> None:
    ids = await one_in_each_state(broker_url)
    client = client_for(create_app(broker_url, read_only=True))

    pages = ["/", "/queues/default"] + [f"/queues/default?state={s.value}" for s in TaskState]
    pages += [f"/queues/default/tasks/{task_id}" for task_id in ids.values()]
    for path in pages:
        html = (await client.get(path)).text
        assert "<form" not in html and "<button" not in html, path
        assert "read-only" in html
    token = client.cookies.get("conveyor_csrf")
    before = await inspector.queue_info("default")
    for path in (
        "/queues/default/pause",
        "/queues/default/delete",
        "/queues/default/states/archived/run",
        f"/queues/default/tasks/{ids[TaskState.RETRY]}/run",
    ):
        refused = await client.post(path, data={"csrf": token or "", "confirm": "yes"})
        assert refused.status_code == 403, path
    assert await inspector.queue_info("default") == before


# -- basic auth ----------------------------------------------------------------------------------


async def test_basic_auth_covers_pages_api_and_static(
    client_for: AppClient, broker_url: str
) -> None:
    app = create_app(broker_url, basic_auth="ops:pa:ss")
    anonymous = client_for(app)
    wrong = client_for(app, headers=basic("ops", "nope"))
    wrong_user = client_for(app, headers=basic("opz", "pa:ss"))
    right = client_for(app, headers=basic("ops", "pa:ss"))

    for path in ("/", "/queues/default", "/api/queues", "/static/dashboard.css", "/nowhere"):
        for refused in (anonymous, wrong, wrong_user):
            response = await refused.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Basic")
            assert "pa:ss" not in response.text
        assert (await right.get(path)).status_code == (404 if path == "/nowhere" else 200)
    assert (await anonymous.post("/queues/default/pause")).status_code == 401


def test_a_malformed_basic_auth_setting_is_refused() -> None:
    from conveyor.errors import ConfigError

    for bad in ("nocolon", ":password", "user:"):
        with pytest.raises(ConfigError) as caught:
            create_app("memory://", basic_auth=bad)
        assert "password" not in str(caught.value).replace("PASSWORD", "")


# -- prefix --------------------------------------------------------------------------------------


async def test_under_a_prefix_every_link_and_form_stays_under_it(
    client_for: AppClient, inspector: AsyncInspector, broker_url: str
) -> None:
    ids = await one_in_each_state(broker_url)
    app = mounted(create_app(broker_url, basic_auth="ops:pw"), "/ops/conveyor")
    client = client_for(app, headers=basic("ops", "pw"))
    anonymous = client_for(app)

    html = (await client.get("/ops/conveyor/queues/default?state=retry")).text
    # data-href / data-action are patterns the page's script prefixes with the mount point.
    targets = re.findall(r'(?<![-\w])(?:href|action|src)="([^"]+)"', html)
    assert targets and all(t.startswith("/ops/conveyor/") for t in targets), targets
    assert (await client.get("/ops/conveyor/api/queues")).status_code == 200
    assert (await client.get("/ops/conveyor/static/dashboard.js")).status_code == 200
    assert (await client.get("/api/queues")).status_code == 404
    redirect = await client.get("/ops/conveyor")
    assert (redirect.status_code, redirect.headers["location"]) == (307, "/ops/conveyor/")
    for path in (
        "/ops/conveyor/",
        "/ops/conveyor/api/queues",
        "/ops/conveyor/static/dashboard.css",
    ):
        assert (await anonymous.get(path)).status_code == 401

    token = client.cookies["conveyor_csrf"]
    run = await client.post(
        f"/ops/conveyor/queues/default/tasks/{ids[TaskState.RETRY]}/run",
        data={"csrf": token, "next": "/ops/conveyor/queues/default?state=retry"},
    )
    assert run.headers["location"] == "/ops/conveyor/queues/default?state=retry&done=run"
    assert (await inspector.get_task("default", ids[TaskState.RETRY])).state is TaskState.PENDING


async def test_an_action_on_a_bad_name_is_a_400(client: httpx.AsyncClient, broker_url: str) -> None:
    token = await csrf_of(client)
    for path in ("/queues/bad%22name/pause", "/queues/default/tasks/bad%3Cid/delete"):
        response = await client.post(path, data={"csrf": token, "confirm": "yes"})
        assert response.status_code == 400, path
        assert "<id" not in response.text and 'bad"name' not in response.text
