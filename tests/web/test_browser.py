"""The dashboard in a real browser: Playwright driving the system's Chromium.

A real worker process runs tasks from ``default`` (so tasks are in every state and the chart has
bars); ``mail`` has no worker, so its tasks stay where the test puts them. Every page is opened,
every action is run by clicking, and the broker is checked afterwards through the Inspector.

Needs ``apt-get install chromium`` (Playwright's own browser download is not used). Without it
these tests skip, or fail when ``CI=true``. With ``CONVEYOR_SCREENSHOTS=<folder>`` set, each page's
screenshot is saved there (``docs/img`` holds the ones the docs show).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Client, Inspector, TaskState, WorkflowState, chain, chord
from support import wait_until

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
CHROMIUM = os.environ.get("CONVEYOR_TEST_CHROMIUM", "/usr/bin/chromium")
XSS = "<script>window.__pwned = 1</script><b>not bold</b>"


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(what: str, why: str) -> None:
    """Skip locally, fail in CI (as tests/conftest.py's helper of the same name, which this
    module cannot import by name once another folder's conftest took the module name)."""
    message = f"{what} unavailable: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true requires it)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    """The dashboard app on a real uvicorn server in a thread."""

    def __init__(self, url: str) -> None:
        import uvicorn

        from conveyor.web import create_app

        self.port = _free_port()
        config = uvicorn.Config(
            create_app(url), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, within=10.0)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class _Worker:
    """``conveyor worker dashboard_app:app`` on ``default``, stderr kept for failure messages."""

    def __init__(self, url: str, folder: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
        env.pop("CONVEYOR_BROKER_URL", None)
        command = [sys.executable, "-m", "conveyor", "worker", "dashboard_app:app"]
        command += ["--broker", url, "--queue", "default", "--lease", "600"]
        self.log = (folder / "worker.log").open("w")
        self.proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=self.log, text=True
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


def _start_worker(url: str, folder: Path) -> _Worker:
    return _Worker(url, folder)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if shutil.which(CHROMIUM) is None:
        service_missing("Chromium at " + CHROMIUM, "apt-get install chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        service_missing("the playwright package", str(exc))
    return CHROMIUM


@pytest.fixture(scope="module")
def setup(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Tasks in every state, a live worker on ``default``, the dashboard served, a browser."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(HERE))
    import dashboard_app

    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{folder / 'dashboard.db'}"
    ids: dict[str, str] = {}
    with Client(url) as client:
        for name, fn in (("ok", dashboard_app.ok), ("flaky", dashboard_app.flaky)):
            ids[name] = client.enqueue(fn.task(note=name), retention=3600).id
        ids["doomed"] = client.enqueue(dashboard_app.doomed.task(note=XSS)).id
        ids["hang"] = client.enqueue(dashboard_app.hang.task(note="hang")).id
        ids["later"] = client.enqueue(dashboard_app.ok.task(note="later"), process_in=3600).id
        for i in range(3):
            ids[f"mail{i}"] = client.enqueue(
                dashboard_app.ok.task(note=f"mail {i}"), queue="mail"
            ).id
        ids["mail_later"] = client.enqueue(
            dashboard_app.ok.task(note="mail later"), queue="mail", process_in=3600
        ).id
        ok = dashboard_app.ok
        done = chain(chord([ok.si(note="fetch a"), ok.si(note="fetch b")], ok.si(note="merge")))
        ids["flow_done"] = client.enqueue_workflow(done).id
        # On "flows", which no worker serves: it stays pending until the test cancels it.
        header = [ok.si(note=f"part {i}").options(queue="flows") for i in range(2)]
        stuck = chord(header, ok.si(note="join").options(queue="flows"))
        ids["flow_stuck"] = client.enqueue_workflow(stuck).id
    with Inspector(url) as admin:
        # Fires at 03:00 and 04:00 UTC only: never during the test.
        nightly = {"cron": "0 3 * * *", "queue": "reports"}
        admin.add_schedule("nightly-report", "demo.ok", {"note": "n"}, **nightly)
        admin.add_schedule("weekly-cleanup", "demo.ok", {"note": "w"}, cron="0 4 * * sun")

    worker = _start_worker(url, folder)
    served = Served(url)
    inspector = Inspector(url)
    try:
        wanted = {"completed": 1, "retry": 1, "archived": 1, "active": 1, "scheduled": 1}
        try:
            wait_until(
                lambda: (
                    all(getattr(inspector.queue_info("default"), k) == v for k, v in wanted.items())
                    and inspector.get_workflow(ids["flow_done"]).state is WorkflowState.SUCCEEDED
                ),
                within=30.0,
                interval=0.1,
            )
        except AssertionError:
            log = (folder / "worker.log").read_text()
            raise AssertionError(f"the worker did not run the tasks; its log:\n{log}") from None
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            yield {
                "url": url,
                "ids": ids,
                "base": served.base,
                "page": page,
                "inspector": inspector,
            }
            browser.close()
    finally:
        inspector.close()
        served.stop()
        worker.stop()


def shot(page: Any, name: str) -> None:
    """Save a screenshot of the page when ``CONVEYOR_SCREENSHOTS`` names a folder."""
    folder = os.environ.get("CONVEYOR_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"), full_page=True)


def test_every_page_opens(setup: dict[str, Any]) -> None:
    page, base, ids = setup["page"], setup["base"], setup["ids"]

    page.goto(base + "/")
    assert page.locator('tr[data-queue="default"]').count() == 1
    assert page.locator('tr[data-queue="mail"]').count() == 1
    assert page.locator("svg[data-chart] rect.ok").count() == 60
    shot(page, "overview")

    for state in TaskState:
        page.goto(f"{base}/queues/default?state={state.value}")
        assert page.locator("nav.tabs a.current").inner_text().startswith(state.value)
        rows = page.locator("table.tasks tbody tr")
        assert rows.count() == (0 if state is TaskState.PENDING else 1), state
    page.goto(f"{base}/queues/default?state=retry")
    shot(page, "queue")

    for name in ("ok", "flaky", "doomed", "hang", "later"):
        page.goto(f"{base}/queues/default/tasks/{ids[name]}")
        assert ids[name] in page.locator("h1").inner_text()
    page.goto(f"{base}/queues/default/tasks/{ids['ok']}")
    assert '"echo": "ok"' in page.locator("pre.result").inner_text()


def test_an_html_payload_renders_as_text(setup: dict[str, Any]) -> None:
    page, base, ids = setup["page"], setup["base"], setup["ids"]

    page.goto(f"{base}/queues/default/tasks/{ids['doomed']}")

    assert page.evaluate("window.__pwned") is None
    assert XSS in page.locator("pre.payload").inner_text()
    assert XSS in page.locator("pre.error").inner_text()
    assert XSS in page.locator("table.history pre.attempt-error").inner_text()
    assert page.locator("pre.payload b").count() == 0
    shot(page, "task")
    page.goto(f"{base}/queues/default?state=archived")
    assert page.evaluate("window.__pwned") is None
    assert "<script>" in page.locator("code.preview").first.inner_text()


def _click(page: Any, label: str) -> None:
    page.get_by_role("button", name=label).first.click()
    page.wait_for_load_state()


def test_queue_actions_through_the_ui(setup: dict[str, Any]) -> None:
    page, base, inspector = setup["page"], setup["base"], setup["inspector"]

    page.goto(f"{base}/queues/mail")
    _click(page, "Pause queue")
    assert inspector.queue_info("mail").paused is True
    assert page.locator("p.notice").inner_text() == "Paused the queue."
    _click(page, "Resume queue")
    assert inspector.queue_info("mail").paused is False


def test_task_actions_through_the_ui(setup: dict[str, Any]) -> None:
    page, base, ids, inspector = setup["page"], setup["base"], setup["ids"], setup["inspector"]

    page.goto(f"{base}/queues/mail/tasks/{ids['mail_later']}")
    _click(page, "Run")
    assert inspector.get_task("mail", ids["mail_later"]).state is TaskState.PENDING

    page.goto(f"{base}/queues/mail/tasks/{ids['mail0']}")
    _click(page, "Archive…")
    assert page.locator("h1").inner_text() == "Are you sure?"
    shot(page, "confirm")
    assert inspector.get_task("mail", ids["mail0"]).state is TaskState.PENDING
    _click(page, "Yes, archive")
    assert inspector.get_task("mail", ids["mail0"]).state is TaskState.ARCHIVED

    _click(page, "Delete…")
    _click(page, "Yes, delete")
    assert ids["mail0"] not in [t.id for t in inspector.list_tasks("mail", "archived")]
    assert inspector.queue_info("mail").archived == 0


def test_bulk_actions_through_the_ui(setup: dict[str, Any]) -> None:
    page, base, inspector = setup["page"], setup["base"], setup["inspector"]
    pending = inspector.queue_info("mail").pending
    assert pending >= 2

    page.goto(f"{base}/queues/mail?state=pending")
    _click(page, f"Archive all {pending} pending…")
    _click(page, "Yes, archive")
    assert (inspector.queue_info("mail").pending, inspector.queue_info("mail").archived) == (
        0,
        pending,
    )

    page.goto(f"{base}/queues/mail?state=archived")
    _click(page, f"Run all {pending} archived")
    assert inspector.queue_info("mail").pending == pending
    assert page.locator("p.notice").inner_text() == f"Made pending: {pending} tasks."

    page.goto(f"{base}/queues/mail?state=pending")
    _click(page, f"Delete all {pending} pending…")
    _click(page, "Yes, delete")
    assert inspector.queue_info("mail").size == 0

    page.goto(f"{base}/queues/mail")
    _click(page, "Delete queue…")
    _click(page, "Yes, delete queue")
    assert "mail" not in inspector.queues()


def test_run_a_failed_task_again_on_the_live_worker(setup: dict[str, Any]) -> None:
    page, base, ids, inspector = setup["page"], setup["base"], setup["ids"], setup["inspector"]
    assert inspector.get_task("default", ids["flaky"]).retried == 1

    page.goto(f"{base}/queues/default/tasks/{ids['flaky']}")
    _click(page, "Run")

    # The worker runs it at once; it fails again and goes back to RETRY for another hour.
    wait_until(lambda: inspector.get_task("default", ids["flaky"]).retried == 2, within=15.0)
    assert inspector.get_task("default", ids["flaky"]).state is TaskState.RETRY
    # The live refresh shows it without a reload.
    from playwright.sync_api import expect

    expect(page.locator('[data-field="retried"]')).to_have_text("2", timeout=15000)
    # Its retry history gains the second attempt, escaped like every other text.
    attempts = page.locator("table.history tbody tr")
    expect(attempts).to_have_count(2, timeout=15000)
    assert [attempts.nth(i).locator("td").first.inner_text() for i in range(2)] == ["1", "2"]
    assert "upstream said no to flaky" in attempts.nth(1).inner_text()
    shot(page, "task-history")


def test_operations_pages_open(setup: dict[str, Any]) -> None:
    page, base, ids = setup["page"], setup["base"], setup["ids"]

    page.goto(base + "/")
    assert page.locator('[data-field="workers"]').inner_text() == "1"
    # A worker reports its running tasks with each heartbeat: wait for the one after "hang".
    wait_until(lambda: ids["hang"] in setup["inspector"].list_workers()[0].active, within=20.0)
    page.get_by_role("link", name="Workers alive: 1").click()
    page.wait_for_load_state()
    [worker] = setup["inspector"].list_workers()
    row = page.locator(f'tr[data-worker="{worker.id}"]')
    assert str(worker.pid) in row.inner_text() and "default (1)" in row.inner_text()
    assert ids["hang"] in row.locator("td.active-tasks").inner_text()
    shot(page, "workers")

    page.get_by_role("link", name="Schedules").click()
    page.wait_for_load_state()
    assert page.locator("table.schedules tbody tr").count() == 2
    assert "0 3 * * *" in page.locator('tr[data-schedule="nightly-report"]').inner_text()
    shot(page, "schedules")

    page.get_by_role("link", name="Workflows").click()
    page.wait_for_load_state()
    assert page.locator("table.workflows tbody tr").count() == 2
    shot(page, "workflows")
    page.goto(f"{base}/workflows?state=succeeded")
    page.get_by_role("link", name=ids["flow_done"]).click()
    page.wait_for_load_state()
    steps = page.locator("ul.tree [data-step]")
    assert [steps.nth(i).inner_text() for i in range(steps.count())] == ["succeeded"] * 3
    assert '"echo": "merge"' in page.locator("pre.result").inner_text()
    shot(page, "workflow")


def test_a_step_task_links_to_its_workflow(setup: dict[str, Any]) -> None:
    page, base, ids = setup["page"], setup["base"], setup["ids"]
    step = setup["inspector"].list_tasks("flows", TaskState.PENDING)[0]

    page.goto(f"{base}/queues/flows/tasks/{step.id}")
    page.locator("dd.workflow a").click()
    page.wait_for_load_state()

    assert ids["flow_stuck"] in page.locator("h1").inner_text()


def test_schedule_actions_through_the_ui(setup: dict[str, Any]) -> None:
    page, base, inspector = setup["page"], setup["base"], setup["inspector"]

    def paused() -> bool:
        return next(s for s in inspector.list_schedules() if s.name == "nightly-report").paused

    page.goto(f"{base}/schedules")
    row = page.locator('tr[data-schedule="nightly-report"]')
    row.get_by_role("button", name="Pause").click()
    page.wait_for_load_state()
    assert paused() is True
    assert page.locator("p.notice").inner_text() == "Paused the schedule."
    row.get_by_role("button", name="Resume").click()
    page.wait_for_load_state()
    assert paused() is False


def test_cancel_a_workflow_through_the_ui(setup: dict[str, Any]) -> None:
    page, base, ids, inspector = setup["page"], setup["base"], setup["ids"], setup["inspector"]

    page.goto(f"{base}/workflows/{ids['flow_stuck']}")
    _click(page, "Cancel workflow…")
    assert inspector.get_workflow(ids["flow_stuck"]).state is WorkflowState.PENDING
    _click(page, "Yes, cancel workflow")

    assert inspector.get_workflow(ids["flow_stuck"]).state is WorkflowState.CANCELLED
    assert page.locator("p.notice").inner_text() == "Cancelled the workflow."
    assert page.get_by_role("button", name="Cancel workflow…").count() == 0


def test_cancel_a_running_task_through_the_ui(setup: dict[str, Any]) -> None:
    page, base, ids, inspector = setup["page"], setup["base"], setup["ids"], setup["inspector"]
    assert inspector.get_task("default", ids["hang"]).state is TaskState.ACTIVE

    page.goto(f"{base}/queues/default/tasks/{ids['hang']}")
    _click(page, "Cancel…")
    _click(page, "Yes, cancel")
    assert page.locator("p.notice").inner_text() == "Asked its worker to cancel the task."

    # The live worker stops the handler within about a second; the task ends archived.
    wait_until(
        lambda: inspector.get_task("default", ids["hang"]).state is TaskState.ARCHIVED, within=15.0
    )
    assert "cancelled" in (inspector.get_task("default", ids["hang"]).last_error or "")


# -- live refresh: every page follows the broker through the JSON API, with no reload ---------

LIVE_S = 15_000  # ms: the pages refresh every 5 s


def _no_reload(page: Any) -> None:
    """Mark the document: the mark survives only if the page was never reloaded."""
    page.evaluate("window.__same_page = 1")


def _same_page(page: Any) -> None:
    assert page.evaluate("window.__same_page") == 1


def test_schedules_page_refreshes_live(setup: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, base, inspector = setup["page"], setup["base"], setup["inspector"]
    page.goto(f"{base}/schedules")
    _no_reload(page)
    row = page.locator('tr[data-key="weekly-cleanup"]')
    expect(row.get_by_role("button", name="Pause")).to_be_visible()

    inspector.pause_schedule("weekly-cleanup")
    inspector.add_schedule("live-added", "demo.ok", {"note": "<i>x</i>"}, cron="0 5 * * *")

    expect(row.locator("span.badge.paused")).to_be_visible(timeout=LIVE_S)
    expect(row.get_by_role("button", name="Resume")).to_be_visible()
    expect(row.get_by_role("button", name="Pause")).to_be_hidden()
    added = page.locator('tr[data-key="live-added"]')
    expect(added).to_have_count(1, timeout=LIVE_S)
    assert '{"note": "<i>x</i>"}' in added.inner_text()  # text, not markup
    assert added.locator("i").count() == 0
    # The new row's form works like the server-rendered ones.
    added.get_by_role("button", name="Pause").click()
    page.wait_for_load_state()
    assert next(s for s in inspector.list_schedules() if s.name == "live-added").paused
    _no_reload(page)

    inspector.remove_schedule("live-added")
    expect(page.locator('tr[data-key="live-added"]')).to_have_count(0, timeout=LIVE_S)
    _same_page(page)
    inspector.unpause_schedule("weekly-cleanup")


def test_workflow_pages_refresh_live(setup: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, base, url, inspector = setup["page"], setup["base"], setup["url"], setup["inspector"]
    page.goto(f"{base}/workflows")
    _no_reload(page)

    ok = __import__("dashboard_app").ok
    with Client(url) as client:  # on "flows", which no worker serves: it stays pending
        steps = [ok.si(note=n).options(queue="flows") for n in ("a", "b")]
        flow = client.enqueue_workflow(chain(*steps)).id

    row = page.locator(f'tr[data-key="{flow}"]')
    expect(row).to_have_count(1, timeout=LIVE_S)
    expect(row.locator('[data-field="state"]')).to_have_text("pending")
    row.get_by_role("link", name=flow).click()
    page.wait_for_load_state()
    _no_reload(page)
    expect(page.get_by_role("button", name="Cancel workflow…")).to_be_visible()

    inspector.cancel_workflow(flow)

    expect(page.locator('dl [data-field="state"]')).to_have_text("cancelled", timeout=LIVE_S)
    expect(page.locator("dl span.state.cancelled")).to_have_count(1)
    expect(page.get_by_role("button", name="Cancel workflow…")).to_be_hidden()
    _same_page(page)


def test_workers_page_refreshes_live(setup: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, base = setup["page"], setup["base"]
    page.goto(f"{base}/workers")
    _no_reload(page)
    heartbeat = page.locator('td[data-field="last_heartbeat"]').first
    before = heartbeat.inner_text()

    # The worker beats every few seconds; the page shows each new beat without a reload.
    expect(heartbeat).not_to_have_text(before, timeout=30_000)
    expect(page.locator('[data-count="workers"]')).to_have_text("1")
    _same_page(page)


def test_task_buttons_follow_its_state_live(setup: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, base, url, inspector = setup["page"], setup["base"], setup["url"], setup["inspector"]
    ok = __import__("dashboard_app").ok
    with Client(url) as client:  # on "idle", which no worker serves: it stays pending
        task_id = client.enqueue(ok.task(note="buttons"), queue="idle").id
    page.goto(f"{base}/queues/idle/tasks/{task_id}")
    _no_reload(page)

    def buttons() -> Any:
        return page.locator("div.actions").get_by_role("button")

    expect(buttons()).to_have_text(["Archive…", "Delete…"])

    inspector.archive_task("idle", task_id)
    expect(page.locator('dl [data-field="state"]')).to_have_text("archived", timeout=LIVE_S)
    expect(buttons()).to_have_text(["Run", "Delete…"])

    # The button shown live posts like a server-rendered one: the task is pending again.
    page.get_by_role("button", name="Run").click()
    page.wait_for_load_state()
    assert inspector.get_task("idle", task_id).state is TaskState.PENDING
    expect(buttons()).to_have_text(["Archive…", "Delete…"])
    inspector.delete_queue("idle", force=True)


def test_a_live_worker_row_links_its_tasks(setup: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, base, url = setup["page"], setup["base"], setup["url"]
    page.goto(f"{base}/workers")
    _no_reload(page)
    hang = __import__("dashboard_app").hang
    with Client(url) as client:  # the worker on "default" runs it until the test ends
        task_id = client.enqueue(hang.task(note="linked")).id

    # The worker reports it with a heartbeat; the refreshed cell links it as the server would.
    link = page.locator("td.active-tasks").get_by_role("link", name=task_id)
    expect(link).to_have_count(1, timeout=30_000)
    expect(
        page.locator('td[data-field="queues"]').get_by_role("link", name="default")
    ).to_be_visible()
    _same_page(page)
    link.click()
    page.wait_for_load_state()
    assert task_id in page.locator("h1").inner_text()


def test_queue_page_lists_its_tab_live(setup: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, base, url, inspector = setup["page"], setup["base"], setup["url"], setup["inspector"]
    ok = __import__("dashboard_app").ok
    with Client(url) as client:  # on "quiet", which no worker serves: tasks stay where put
        first = client.enqueue(ok.task(note="first"), queue="quiet").id
    page.goto(f"{base}/queues/quiet?state=pending")
    _no_reload(page)
    rows = page.locator("table.tasks tbody tr")
    expect(rows).to_have_count(1)

    expect(page.get_by_role("button", name="Archive all 1 pending…")).to_be_visible()

    with Client(url) as client:
        added = client.enqueue(ok.task(note="<b>added</b>"), queue="quiet").id
        client.enqueue(ok.task(note="second"), queue="quiet")
    inspector.archive_task("quiet", first)

    # The archived task leaves the pending tab, the new one joins it, counts follow.
    expect(page.locator(f'tr[data-key="{first}"]')).to_have_count(0, timeout=LIVE_S)
    row = page.locator(f'tr[data-key="{added}"]')
    expect(row).to_have_count(1, timeout=LIVE_S)
    assert '"<b>added</b>"' in row.locator("code.preview").inner_text()
    assert row.locator("b").count() == 0
    expect(page.locator('nav.tabs [data-field="archived"]')).to_have_text("1", timeout=LIVE_S)
    # The pager and the bulk buttons count the tab's tasks live too.
    expect(page.locator('nav.pager [data-field="total"]')).to_have_text("2", timeout=LIVE_S)
    expect(page.get_by_role("button", name="Archive all 2 pending…")).to_be_visible()
    _same_page(page)

    # The live row's buttons and link work like the server-rendered ones.
    expect(row.get_by_role("button", name="archive")).to_be_visible()
    actions = [row.locator("form").nth(i).get_attribute("action") for i in range(2)]
    assert actions == [f"/queues/quiet/tasks/{added}/{verb}" for verb in ("archive", "delete")]
    row.get_by_role("link", name=added).click()
    page.wait_for_load_state()
    assert added in page.locator("h1").inner_text()
    inspector.delete_queue("quiet", force=True)


def test_workflow_steps_link_their_tasks_live(setup: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, base, url, inspector = setup["page"], setup["base"], setup["url"], setup["inspector"]
    ok = __import__("dashboard_app").ok
    inspector.pause_queue("default")  # the live worker runs the steps once the test resumes it
    try:
        with Client(url) as client:
            flow = client.enqueue_workflow(chain(ok.si(note="one"), ok.si(note="two"))).id
        page.goto(f"{base}/workflows/{flow}")
        _no_reload(page)
        second = page.locator("ul.tree li", has=page.locator('[data-step="0.1"]')).last
        expect(second.locator('[data-step="0.1"]')).to_have_text("waiting")
        expect(second.get_by_role("link", name="demo.ok")).to_have_count(0)
    finally:
        inspector.unpause_queue("default")

    # The worker runs both steps; the second gains its task's state and a link to the task.
    expect(second.locator('[data-step="0.1"]')).to_have_text("succeeded", timeout=LIVE_S)
    expect(second.locator('[data-task-state="0.1"]')).to_have_text("task completed")
    link = second.get_by_role("link", name="demo.ok")
    expect(link).to_be_visible()
    _same_page(page)
    # Its task was not kept (no retention): the link is checked, not followed.
    task_id = inspector.get_workflow(flow).steps[1].task_id
    assert link.get_attribute("href") == f"/queues/default/tasks/{task_id}"
