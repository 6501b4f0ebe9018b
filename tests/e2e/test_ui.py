"""The Mission Board in a real headless Chromium against the running stack, as a person uses it:
submit a task, watch every node of its plan reach completed without reloading, open a result, and
read the log; deep links; the Agent Hub. Screenshots land in artifacts/ (gitignored), with the
measured latency from a KV change to the screen."""

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.support.browser import (
    CONTRAST_AUDIT,
    RENDER_MARKS,
    KVClock,
    chromium,
    render_latencies,
    summary,
)
from tests.support.plans import scripted, subtask
from tests.support.stack import UI_DIST

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
ORDER = ["pending", "creating_agent", "executing", "completed"]

# Runs in the page before its scripts: notes every status a plan node shows, and marks the page
# load, so the test can tell that the statuses changed in place and nothing reloaded.
WATCH_NODES = """
window.__pageLoad = Math.random();
window.__statuses = {};
const note = (el) => {
  if (!(el instanceof Element) || el.getAttribute("data-testid") !== "plan-node") return;
  const seen = (window.__statuses[el.dataset.subtask] ||= []);
  if (seen.at(-1) !== el.dataset.status) seen.push(el.dataset.status);
};
new MutationObserver((records) => {
  for (const record of records) {
    if (record.type === "attributes") note(record.target);
    for (const added of record.addedNodes) {
      if (added instanceof Element) { note(added); added.querySelectorAll("[data-testid=plan-node]").forEach(note); }
    }
  }
}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"] });
"""


SHOWN = """({ view, finals }) => {
  const seen = {};
  for (const mark of performance.getEntriesByName("aether:render"))
    if (mark.detail.view === view) for (const c of mark.detail.changes) seen[c.task] = Math.max(seen[c.task] || 0, c.revision);
  return Object.entries(finals).every(([task, revision]) => (seen[task] || 0) >= revision);
}"""


@pytest.fixture(scope="module")
def browser():
    assert (UI_DIST / "index.html").is_file(), "the Mission Board is not built: run `make ui`"
    ARTIFACTS.mkdir(exist_ok=True)
    for stale in ARTIFACTS.glob("failed-*.png"):
        stale.unlink()
    with chromium() as browser:
        yield browser


def open_page(browser, errors: list[str], key: str | None = None):
    # A context of its own: headless Chromium barely draws a page that is not in front.
    context = browser.new_context(viewport=DESKTOP)
    context.add_init_script(WATCH_NODES)
    if key:  # signed in, as the sign-in form or `make up`'s link leaves a browser
        context.add_init_script(f"localStorage.setItem('aether.apiKey', {json.dumps(key)})")
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


@pytest.fixture
def page(browser, request, stack):
    errors: list[str] = []
    page = open_page(browser, errors, stack.api_key)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and not page.is_closed():
        # What the page showed when its test failed, next to the screenshots.
        page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
    page.context.close()
    assert not errors, errors


def diamond(title: str) -> str:
    return scripted(
        title,
        [
            subtask("schema", "database-expert", sim="latency_ms=400"),
            subtask("api", "python-backend", deps=["schema"], sim="latency_ms=1500"),
            subtask("ui", "react-frontend", deps=["schema"], sim="latency_ms=500"),
            subtask("tests", "testing-expert", deps=["api", "ui"], sim="latency_ms=400"),
        ],
    )


def statuses(page) -> dict[str, str]:
    return page.eval_on_selector_all(
        "[data-testid=plan-node]", "nodes => Object.fromEntries(nodes.map(n => [n.dataset.subtask, n.dataset.status]))"
    )


def short_tokens(value: int) -> str:
    """As the board writes token counts (ui/src/format.ts)."""
    if value < 1000:
        return str(value)
    return f"{value / 1000:.1f}k" if value < 10_000 else f"{value / 1000:.0f}k"


def assert_contrast(page, where: str) -> None:
    failures = page.evaluate(CONTRAST_AUDIT)
    assert not failures, f"text below WCAG AA contrast on {where}: {failures}"


def test_submit_a_task_and_watch_every_node_complete_without_reloading(stack, page):
    with KVClock(stack.nats_url) as clock:
        page.goto(f"{stack.url}/")
        page.get_by_role("heading", name="Tasks").wait_for()
        page.get_by_text("Live", exact=True).wait_for()
        load = page.evaluate("window.__pageLoad")

        field = page.get_by_label("New task for Jason")
        field.fill(diamond("Browser diamond"))
        field.press("Control+Enter")
        page.wait_for_url(re.compile(r"/tasks/[^/]+$"))
        task_id = page.url.rsplit("/", 1)[1]
        page.get_by_role("heading", name="Plan").wait_for()
        page.locator("[data-testid=plan-node]").first.wait_for()
        assert_contrast(page, "the task view while it runs")
        page.wait_for_function(
            """() => { const nodes = [...document.querySelectorAll("[data-testid=plan-node]")];
                       return nodes.length === 4 && nodes.every(n => n.dataset.status === "completed"); }""",
            timeout=120_000,
        )
        page.get_by_role("heading", name="Final result").wait_for()
        task = httpx.get(f"{stack.url}/api/orchestrate/task/{task_id}", headers=stack.auth_headers(), timeout=30).json()
        assert task["status"] == "completed"

        # Every node changed in place, in order, and the slow one was seen running.
        seen = page.evaluate("window.__statuses")
        assert set(seen) == {"schema", "api", "ui", "tests"}
        for subtask_id, history in seen.items():
            assert history[-1] == "completed", (subtask_id, history)
            assert [ORDER.index(s) for s in history] == sorted(ORDER.index(s) for s in history), (subtask_id, history)
        assert "executing" in seen["api"], seen
        assert page.evaluate("window.__pageLoad") == load
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

        # Open a result from the keyboard: focus the node, Enter.
        node = page.get_by_role("button", name=re.compile(r"^Subtask api, python-backend, Completed"))
        node.focus()
        page.keyboard.press("Enter")
        panel = page.locator("[data-testid=subtask-panel]")
        assert panel.get_attribute("data-subtask") == "api"
        panel.get_by_role("heading", name="Subtask api").wait_for()
        result = next(s["result"] for s in task["subtasks"] if s["id"] == "api")
        assert "Simulated work on" in panel.inner_text() and "Simulated work on" in result
        # The expert's files went to the workspace; the panel lists them and shows one highlighted.
        panel.locator("[data-testid=subtask-files] button", has_text="app/main.py").click()
        code = panel.locator("[data-testid=file-content] pre code")
        code.wait_for()
        assert panel.locator("[data-testid=file-content] pre code.hljs .hljs-keyword").count() > 0
        assert "from fastapi import FastAPI" in code.first.inner_text()
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        assert panel.get_attribute("data-subtask") != "api"  # Tab moved to the next node

        final = page.locator("section", has=page.get_by_role("heading", name="Final result"))
        assert "Integrated result (simulated)" in final.inner_text()
        log = page.locator("[data-testid=task-log] li")
        assert [int(s) for s in log.evaluate_all("items => items.map(i => i.dataset.seq)")] == list(range(1, len(task["logs"]) + 1))
        usage = page.locator("section", has=page.get_by_role("heading", name="Durations and tokens"))
        rows = usage.locator("tbody tr").all_inner_texts()
        assert len(rows) == 4 and all(re.search(r"\d s\s", row) for row in rows), rows  # a duration each
        assert short_tokens(task["usage"]["total_tokens"]) in usage.locator("tfoot").inner_text()
        # The workspace's repository, downloaded as the browser would (the link carries the key).
        download = page.get_by_role("link", name="Download .tar.gz")
        download.wait_for()
        archive = httpx.get(f"{stack.url}{download.get_attribute('href')}", timeout=30)
        assert archive.status_code == 200 and archive.content[:2] == b"\x1f\x8b", archive.text[:200]
        bundle = page.get_by_role("link", name="Download git bundle").get_attribute("href")
        assert httpx.get(f"{stack.url}{bundle}", timeout=30).content.startswith(b"# v2 git bundle")
        assert_contrast(page, "the task view")
        page.screenshot(path=str(ARTIFACTS / "ui-task.png"), full_page=True)

        page.set_viewport_size(PHONE)
        page.wait_for_function("document.documentElement.scrollWidth <= 375")
        page.screenshot(path=str(ARTIFACTS / "ui-task-375.png"), full_page=True)
        page.set_viewport_size(DESKTOP)

        # Neither a title with no place to break nor a long last event may widen the board on a phone.
        wide = httpx.post(
            f"{stack.url}/api/orchestrate/task",
            json={"description": "Unbreakable" + "x" * 400 + " [[sim planner.fail=400]]"},
            headers=stack.auth_headers(),
            timeout=30,
        ).json()["id"]
        page.get_by_role("link", name="Mission Board").first.click()
        page.locator(f"[data-testid=task-card][data-task='{wide}'][data-status=failed]").wait_for()
        card = page.locator(f"[data-testid=task-card][data-task='{task_id}']")
        card.wait_for()
        assert card.get_attribute("data-status") == "completed"
        assert page.evaluate("window.__pageLoad") == load
        assert_contrast(page, "the board")
        page.screenshot(path=str(ARTIFACTS / "ui-board.png"), full_page=True)
        page.set_viewport_size(PHONE)
        page.wait_for_function("document.documentElement.scrollWidth <= 375")
        page.screenshot(path=str(ARTIFACTS / "ui-board-375.png"), full_page=True)

        page.wait_for_function(SHOWN, arg={"view": "task", "finals": {task_id: task["revision"]}})
        marks = page.evaluate(RENDER_MARKS)
    latencies = render_latencies(clock, marks, "task", {task_id})
    assert latencies, "no revision of the task was matched to a frame"
    _record("ui-latency-single-task.json", {"task_view": summary(latencies)})


def test_the_page_resumes_after_the_gateway_dies_without_losing_or_repeating_an_event(stack, page):
    plan = scripted(
        "Survives a gateway restart",
        [
            subtask("first", "fullstack"),
            subtask("slow", "fullstack", deps=["first"], sim="latency_ms=1200 tools=run"),  # its steps span the restart
            subtask("last", "fullstack", deps=["slow"]),
        ],
    )
    task = httpx.post(f"{stack.url}/api/orchestrate/task", json={"description": plan}, headers=stack.auth_headers(), timeout=30).json()
    page.goto(f"{stack.url}/tasks/{task['id']}")
    page.locator("[data-testid=plan-node][data-subtask=slow][data-status=executing]").wait_for(timeout=90_000)
    page.locator("[data-testid=plan-node][data-subtask=slow]").click()
    load = page.evaluate("window.__pageLoad")
    old = stack.kill("gateway")
    page.get_by_text("Reconnecting…").wait_for()
    stack.wait_healthy_again("gateway", old)
    page.get_by_role("heading", name="Final result").wait_for(timeout=90_000)
    # The live steps are not resumed: the page fetched the ones it missed, and shows each once.
    steps = httpx.get(f"{stack.url}/api/orchestrate/task/{task['id']}/subtasks/slow/steps", headers=stack.auth_headers(), timeout=30).json()
    assert steps
    page.wait_for_function("n => document.querySelectorAll('[data-testid=step]').length === n", arg=len(steps))

    logs = httpx.get(f"{stack.url}/api/orchestrate/task/{task['id']}", headers=stack.auth_headers(), timeout=30).json()["logs"]
    shown = page.locator("[data-testid=task-log] li").evaluate_all("items => items.map(i => Number(i.dataset.seq))")
    assert shown == list(range(1, len(logs) + 1))  # every event once, in order, across the restart
    assert statuses(page) == {"first": "completed", "slow": "completed", "last": "completed"}
    assert page.evaluate("window.__pageLoad") == load  # resumed in place, not reloaded


def test_signing_in_with_a_key_from_the_form_or_the_link_make_up_prints(stack, browser):
    errors: list[str] = []
    page = open_page(browser, errors)  # a browser that has no key yet
    page.goto(f"{stack.url}/")
    page.get_by_role("heading", name="Sign in with an API key").wait_for()
    assert_contrast(page, "the sign-in form")
    field = page.get_by_label("API key")
    field.fill("not-the-key-0000000000")
    field.press("Enter")
    page.get_by_role("alert").filter(has_text="does not accept this key").wait_for()
    field.fill(stack.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Tasks").wait_for()
    page.get_by_text("Live", exact=True).wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in with an API key").wait_for()

    page.goto(f"{stack.url}/agents#access_token={stack.api_key}")
    page.get_by_role("heading", name="Agent Hub", exact=True).wait_for()
    assert "access_token" not in page.url  # the key does not stay in the address bar or history
    page.context.close()
    assert not errors, errors


def test_a_link_with_another_key_asks_before_it_replaces_the_stored_one(stack, browser):
    """Issue 19, finding 9: a crafted link must not move a signed-in browser into another tenant."""
    errors: list[str] = []
    page = open_page(browser, errors, stack.api_key)  # signed in with the dev key
    other = "someone-elses-key-000000000000"
    stored = "localStorage.getItem('aether.apiKey')"
    dialog = page.get_by_role("dialog", name="Use the key from this link?")

    page.goto(f"{stack.url}/agents#access_token={other}")
    dialog.wait_for()
    assert "access_token" not in page.url  # gone at once, whatever the answer
    assert "This link signs you in with a different API key" in dialog.inner_text()
    assert page.evaluate("document.activeElement.textContent") == "Keep current key"
    assert page.evaluate(stored) == stack.api_key, "nothing is replaced before the user answers"
    assert_contrast(page, "the key switch dialog")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.evaluate(stored) == stack.api_key
    page.get_by_role("heading", name="Agent Hub", exact=True).wait_for()
    page.get_by_role("heading", name="Agents pool").wait_for()  # still this tenant's board

    # A link opened in a tab that shows the board already only changes the fragment.
    page.evaluate(f"location.hash = '#access_token={other}'")
    dialog.wait_for()
    assert "access_token" not in page.url
    dialog.get_by_role("button", name="Keep current key").click()
    dialog.wait_for(state="hidden")
    assert page.evaluate(stored) == stack.api_key

    # Accepted, the link's key is used: the gateway does not know this one, so it asks for a key.
    page.goto(f"{stack.url}/#access_token={other}")
    dialog.get_by_role("button", name="Use the new key").click()
    dialog.wait_for(state="hidden")
    assert page.evaluate(stored) == other
    page.get_by_role("heading", name="Sign in with an API key").wait_for()
    page.get_by_text("The gateway no longer accepts the key this browser had.").wait_for()
    page.context.close()
    assert not errors, errors


def test_deep_links_reloads_and_unknown_pages(stack, page):
    with httpx.Client(base_url=stack.url, timeout=30, headers=stack.auth_headers()) as client:
        title = "Deep link " + "y" * 300  # nowhere to break a line
        task = client.post("/api/orchestrate/task", json={"description": scripted(title, [subtask("only", "fullstack")])}).json()
    page.set_viewport_size(PHONE)
    page.goto(f"{stack.url}/tasks/{task['id']}")
    page.get_by_role("heading", name=title).wait_for()
    page.get_by_role("heading", name="Final result").wait_for(timeout=60_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.reload()
    page.get_by_role("heading", name="Final result").wait_for()
    assert page.locator("[data-testid=plan-node][data-status=completed]").count() == 1

    page.goto(f"{stack.url}/tasks/00000000-0000-7000-8000-000000000000")
    page.get_by_text("No such task").wait_for()
    assert_contrast(page, "the missing-task page")
    page.goto(f"{stack.url}/no/such/page")
    page.get_by_text("Nothing here").wait_for()
    assert httpx.get(f"{stack.url}/api/no-such-endpoint", headers=stack.auth_headers()).status_code == 404  # the API keeps its 404s


def test_the_agent_hub_lists_the_templates_and_is_reachable_by_keyboard(stack, page):
    page.goto(f"{stack.url}/")
    page.get_by_role("navigation", name="Main").wait_for()  # React renders after the load event
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.get_by_role("link", name="Agent Hub").click()
    page.get_by_role("heading", name="Agent Hub", exact=True).wait_for()
    templates = page.locator("[data-testid=agent-templates] > li")
    templates.first.wait_for()
    assert templates.count() == len(httpx.get(f"{stack.url}/api/orchestrate/agents", headers=stack.auth_headers()).json()) == 6
    body = page.inner_text("body")
    assert "Neural Link" not in body and "System Metrics" not in body
    page.get_by_role("heading", name="Agents pool").wait_for()
    page.wait_for_function("!document.querySelector('[role=status]')?.textContent?.includes('Loading the agent pool')")
    assert_contrast(page, "the Agent Hub")
    page.screenshot(path=str(ARTIFACTS / "ui-agents.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_function("document.documentElement.scrollWidth <= 375")


def test_delete_an_agent_through_the_confirmation_dialog(stack, page):
    with httpx.Client(base_url=stack.url, timeout=30, headers=stack.auth_headers()) as client:
        task = client.post("/api/orchestrate/task", json={"description": scripted("Needs an agent", [subtask("only", "fullstack")])}).json()
        page.goto(f"{stack.url}/tasks/{task['id']}")
        page.get_by_role("heading", name="Final result").wait_for(timeout=90_000)
        agent_id = client.get(f"/api/orchestrate/task/{task['id']}").json()["subtasks"][0]["agent_id"]
        agent = next(a for a in client.get("/api/agents").json() if a["id"] == agent_id)
        assert agent["role"] == "expert" and agent["deletable"]

        page.get_by_role("link", name="Agent Hub").click()
        card = page.locator(f"[data-testid=agent-card][data-agent='{agent_id}']")
        card.wait_for()
        master = page.locator("[data-testid=agent-card][data-agent=jason]")
        assert master.get_by_role("button").count() == 0 and "Master" in master.inner_text()

        trash = card.get_by_role("button", name=f"Delete agent {agent['name']}")
        trash.click()
        dialog = page.get_by_role("dialog", name=f"Delete agent {agent['name']}?")
        dialog.wait_for()
        assert page.evaluate("document.activeElement.textContent") == "Cancel"
        page.keyboard.press("Escape")  # changed my mind
        dialog.wait_for(state="hidden")
        assert next(a for a in client.get("/api/agents").json() if a["id"] == agent_id)["status"] not in ("stopping", "stopped")

        trash.click()
        dialog.get_by_role("button", name="Delete agent").click()
        dialog.wait_for(state="hidden")
        page.get_by_text(f"Agent {agent['name']} is stopping.").wait_for()
        # The list refreshed: the agent is stopping or already gone, here and in the API.
        page.wait_for_function(
            """(id) => { const card = document.querySelector(`[data-testid=agent-card][data-agent="${id}"]`);
                         return !card || /stopping|stopped/.test(card.textContent); }""",
            arg=agent_id,
        )
        after = [a for a in client.get("/api/agents").json() if a["id"] == agent_id]
        assert not after or after[0]["status"] in ("stopping", "stopped")
        assert_contrast(page, "the Agent Hub after a deletion")


def test_kv_change_to_screen_latency_over_a_run(stack, browser):
    """Measured, not asserted: the figures go to artifacts/ui-latency.json and the report. Both
    pages are open and live before the tasks start, so page loads are not in the figures."""
    errors: list[str] = []
    board, watched = open_page(browser, errors, stack.api_key), open_page(browser, errors, stack.api_key)
    with KVClock(stack.nats_url) as clock, httpx.Client(base_url=stack.url, timeout=30, headers=stack.auth_headers()) as client:
        board.goto(f"{stack.url}/")
        board.get_by_text("Live", exact=True).wait_for()
        # The first task plans slowly, so its page is live before its plan runs.
        first = client.post(
            "/api/orchestrate/task", json={"description": diamond("Latency run 0 [[sim planner.latency_ms=1500]]")}
        ).json()["id"]
        watched.goto(f"{stack.url}/tasks/{first}")
        watched.get_by_text("Live", exact=True).wait_for()
        since = board.evaluate("Date.now()")
        tasks = [first] + [
            client.post("/api/orchestrate/task", json={"description": diamond(f"Latency run {n}")}).json()["id"]
            for n in range(1, 6)
        ]
        for task_id in tasks:
            board.locator(f"[data-testid=task-card][data-task='{task_id}'][data-status=completed]").wait_for(timeout=120_000)
        watched.get_by_role("heading", name="Final result").wait_for(timeout=60_000)
        finals = {t: client.get(f"/api/orchestrate/task/{t}").json()["revision"] for t in tasks}
        # A frame is marked just after it is drawn: wait for the marks of the final revisions.
        board.wait_for_function(SHOWN, arg={"view": "board", "finals": finals})
        watched.wait_for_function(SHOWN, arg={"view": "task", "finals": {first: finals[first]}})
        board_marks, task_marks = board.evaluate(RENDER_MARKS), watched.evaluate(RENDER_MARKS)
    board.context.close()
    watched.context.close()
    assert not errors, errors
    on_board = render_latencies(clock, board_marks, "board", set(tasks), since)
    on_task = render_latencies(clock, task_marks, "task", {first}, since)
    expected = sum(1 for task, stored in clock.stored.values() if task in tasks and stored * 1000 >= since)
    assert len(on_board) == expected, "a revision never reached the board"
    _record("ui-latency.json", {"board": summary(on_board), "task_view": summary(on_task), "tasks": len(tasks)})


def _record(name: str, figures: dict) -> None:
    (ARTIFACTS / name).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(figures)}")


def test_the_board_and_the_docs_run_under_their_content_security_policy(stack, browser):
    """Nothing on either page is loaded from elsewhere, and nothing the policy forbids is needed:
    Chromium reports every violation on the console (issue 19)."""
    errors: list[str] = []
    page = open_page(browser, errors, stack.api_key)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(f"{stack.url}/docs")
        page.locator(".swagger-ui .info .title").get_by_text("Aether").wait_for(timeout=30_000)
        page.get_by_text("/api/orchestrate/task/{task_id}/repository.bundle").first.wait_for()
        page.goto(f"{stack.url}/")
        page.get_by_role("heading", name="Tasks").wait_for()
        page.wait_for_load_state("networkidle")
    finally:
        page.context.close()
    assert not errors, errors
    violations = [c for c in console if "Content Security Policy" in c or "Refused to" in c]
    assert not violations, violations
    assert requests and all(url.startswith(stack.url) for url in requests), [u for u in requests if not u.startswith(stack.url)]


# -- an expert's steps ----------------------------------------------------------------------------


def open_subtask(page, stack, task_id: str, subtask_id: str):
    page.goto(f"{stack.url}/tasks/{task_id}")
    page.locator(f"[data-testid=plan-node][data-subtask='{subtask_id}']").click()
    panel = page.locator(f"[data-testid=subtask-panel][data-subtask='{subtask_id}']")
    panel.wait_for()
    return panel


def test_a_subtasks_steps_show_the_failing_run_the_fix_the_passing_run_and_its_checks(stack, page):
    """The simulator's scripted tool run (tools/simulator `acting_reply`): code and a test with a
    bug, a failing run, a fix, a passing run; then Aether's own check, and the synthesizer's."""
    plan = scripted("Steps in the browser", [{**subtask("calc", "python-backend", sim="latency_ms=300"), "verify": ["python3 -m pytest -q"]}])
    task = httpx.post(f"{stack.url}/api/orchestrate/task", json={"description": plan}, headers=stack.auth_headers(), timeout=30).json()
    panel = open_subtask(page, stack, task["id"], "calc")
    steps = panel.locator("[data-testid=subtask-steps] [data-testid=step]")
    # Live: steps appear while the subtask still runs, without a reload.
    page.wait_for_function(
        """() => document.querySelector("[data-testid=plan-node][data-subtask=calc]")?.dataset.status === "executing"
                 && document.querySelectorAll("[data-testid=step]").length > 0""",
        timeout=60_000,
    )
    page.get_by_role("heading", name="Repository checks").wait_for(timeout=90_000)
    done = httpx.get(f"{stack.url}/api/orchestrate/task/{task['id']}", headers=stack.auth_headers(), timeout=30).json()
    assert done["status"] == "completed", done["logs"]
    fetched = httpx.get(f"{stack.url}/api/orchestrate/task/{task['id']}/subtasks/calc/steps", headers=stack.auth_headers(), timeout=30).json()
    page.wait_for_function("n => document.querySelectorAll('[data-testid=step]').length === n", arg=len(fetched))

    shown = steps.evaluate_all("items => items.map(i => [i.dataset.kind, i.dataset.tool, i.dataset.exit])")
    assert shown == [[s["kind"], s["tool"], "" if s["exit_code"] is None else str(s["exit_code"])] for s in fetched]
    runs = [exit for kind, tool, exit in shown if tool == "run_command"]
    assert runs[0] not in ("", "0") and runs[-1] == "0", runs  # the failing run, then the passing one
    failing = panel.locator("[data-testid=step][data-tool=run_command]").first
    assert "python3 -m pytest -q" in failing.inner_text() and f"exit {runs[0]}" in failing.inner_text()
    assert "edit_file" in panel.locator("[data-testid=step][data-tool=edit_file]").first.inner_text()
    passing = panel.locator("[data-testid=step][data-tool=run_command][data-exit='0']").last
    assert "exit 0" in passing.get_by_test_id("outcome").inner_text()

    # Aether's own check, in its round, passed; and the subtask's checks say so.
    round_ = panel.get_by_test_id("check-round").first
    assert "Aether's checks, round 1" in round_.inner_text()
    assert round_.get_by_test_id("outcome").inner_text().strip() == "passed"
    assert panel.get_by_test_id("subtask-checks").get_attribute("data-passed") == "true"

    # The failing run's output on demand, as text.
    failing.get_by_text("Output", exact=True).click()
    output = failing.get_by_test_id("step-output")
    output.wait_for()
    assert "assert 5 == 6" in output.inner_text()

    verdict = page.get_by_test_id("repository-verdict")
    assert "The repository passes its checks" in verdict.inner_text()
    assert_contrast(page, "the subtask's steps")
    page.screenshot(path=str(ARTIFACTS / "ui-steps-task.png"), full_page=True)
    panel_shot(page, panel, DESKTOP["width"], "ui-steps.png")
    page.set_viewport_size(PHONE)
    page.wait_for_function("document.documentElement.scrollWidth <= 375")
    assert_contrast(page, "the subtask's steps on a phone")
    panel_shot(page, panel, PHONE["width"], "ui-steps-375.png")


def panel_shot(page, panel, width: int, name: str) -> None:
    """The panel alone, in a window tall enough to hold it (no sticky header drawn across it)."""
    page.set_viewport_size({"width": width, "height": 900})
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": width, "height": min(height, 16_000)})
    panel.screenshot(path=str(ARTIFACTS / name))


def test_tool_errors_are_steps_with_what_the_model_was_told(stack, page):
    """Needs no sandbox: `tools=broken` calls tools wrongly four times, then writes a file."""
    plan = scripted("Broken tool calls in the browser", [subtask("wrong", "fullstack", sim="tools=broken")])
    task = httpx.post(f"{stack.url}/api/orchestrate/task", json={"description": plan}, headers=stack.auth_headers(), timeout=30).json()
    panel = open_subtask(page, stack, task["id"], "wrong")
    page.locator("[data-testid=plan-node][data-subtask=wrong][data-status=completed]").wait_for(timeout=90_000)
    steps = panel.locator("[data-testid=step]")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=step]').length === 5")
    assert steps.evaluate_all("items => items.map(i => i.dataset.ok)") == ["false"] * 4 + ["true"]
    texts = steps.all_inner_texts()
    assert "delete_everything" in texts[0] and "unknown tool 'delete_everything'" in texts[0]
    assert "write_file" in texts[1] and "x.py" in texts[1] and "not valid JSON" in texts[1]
    assert "../../escape.txt" in texts[2] and "contains '..'" in texts[2]
    assert "read_file" in texts[3] and "bad arguments for read_file" in texts[3]
    assert "write_file" in texts[4] and "notes.md (33 bytes)" in texts[4]
    assert [steps.nth(i).get_by_test_id("outcome").inner_text().strip() for i in range(5)] == ["error"] * 4 + ["ok"]
    assert "5 tool calls · 4 tool errors" in panel.get_by_test_id("subtask-steps").inner_text()
    assert panel.get_by_test_id("subtask-checks").count() == 0  # it has none
    assert_contrast(page, "a subtask's tool errors")
    panel_shot(page, panel, DESKTOP["width"], "ui-steps-tool-errors.png")
    page.set_viewport_size(PHONE)
    page.wait_for_function("document.documentElement.scrollWidth <= 375")


def waiting_for_a_person() -> str:
    """How many things wait for a person on the board: what the board's count must say."""
    return """() => { const shown = document.querySelector("[data-testid=waiting-count]");
                      return shown ? parseInt(shown.textContent, 10) : 0; }"""


def api(stack, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{stack.url}{path}", headers=stack.auth_headers(), timeout=30, **kwargs)


def expected_waiting(stack) -> int:
    tasks = api(stack, "GET", "/api/orchestrate/tasks", params={"limit": 500}).json()
    return sum((t["status"] == "awaiting_approval") + t["open_questions"] for t in tasks)


def test_a_plan_waits_on_the_board_and_is_edited_refused_fixed_and_approved_or_rejected(stack, page):
    """Issue 15: submitted with "Let me approve the plan first"; the board counts what waits; the
    plan is edited in its JSON box (an unknown agent type is refused with the gateway's reason),
    fixed and approved, and runs the edited plan; another plan is rejected with a reason."""
    page.goto(f"{stack.url}/")
    page.get_by_text("Live", exact=True).wait_for()
    page.get_by_label("New task for Jason").fill(scripted("Approve in the browser", [subtask("a", "fullstack"), subtask("b", "python-backend", ["a"])]))
    page.get_by_label("Let me approve the plan first").check()
    page.get_by_role("button", name="Submit task").click()
    page.wait_for_url(re.compile(r"/tasks/[^/]+$"))
    task_id = page.url.rsplit("/", 1)[1]
    approval = page.get_by_test_id("approval-panel")
    approval.get_by_role("heading", name="Jason's plan waits for your approval").wait_for(timeout=60_000)
    page.locator("[data-testid=plan-node][data-subtask=b][data-status=pending]").wait_for()
    assert_contrast(page, "a plan waiting for approval")
    page.screenshot(path=str(ARTIFACTS / "ui-approval.png"), full_page=True)

    page.get_by_role("link", name="Mission Board").first.click()
    card = page.locator(f"[data-testid=task-card][data-task='{task_id}'][data-status=awaiting_approval]")
    card.wait_for()
    assert "Its plan waits for your approval" in card.inner_text()
    page.wait_for_function(f"() => ({waiting_for_a_person()})() === {expected_waiting(stack)}")
    assert_contrast(page, "the board with a plan waiting")
    page.get_by_test_id("waiting-count").click()
    assert page.get_by_role("button", name=re.compile("^Waiting for you")).get_attribute("aria-pressed") == "true"
    card.click()

    approval.get_by_role("button", name="Edit plan").click()
    editor = approval.get_by_label(re.compile(r"^Plan \(JSON"))
    plan = json.loads(editor.input_value())
    assert [s["id"] for s in plan["subtasks"]] == ["a", "b"]
    plan["subtasks"] = [{"id": "only", "description": "Do it all", "agent_type": "cobol-expert", "depends_on": [], "verify": []}]
    editor.fill(json.dumps(plan))
    approval.get_by_role("button", name="Approve edited plan").click()
    refusal = approval.get_by_role("alert")
    refusal.wait_for()
    assert "unknown agent type 'cobol-expert'" in refusal.inner_text()
    assert api(stack, "GET", f"/api/orchestrate/task/{task_id}").json()["status"] == "awaiting_approval"
    plan["subtasks"][0]["agent_type"] = "fullstack"
    editor.fill(json.dumps(plan))
    approval.get_by_role("button", name="Approve edited plan").click()
    approval.wait_for(state="detached")
    page.locator("[data-testid=plan-node][data-subtask=only][data-status=completed]").wait_for(timeout=90_000)
    assert page.locator("[data-testid=plan-node]").count() == 1

    rejected = api(stack, "POST", "/api/orchestrate/task", json={"description": scripted("Reject in the browser", [subtask("r", "fullstack")]), "require_plan_approval": True}).json()
    page.goto(f"{stack.url}/tasks/{rejected['id']}")
    approval.get_by_role("button", name="Reject…").click()
    approval.get_by_label("Why reject it?").fill("not this week")
    approval.get_by_role("button", name="Reject plan").click()
    cancelled = page.get_by_role("alert").filter(has_text="The task was cancelled")
    cancelled.wait_for()
    assert "plan rejected: not this week" in cancelled.inner_text()
    assert page.get_by_role("heading", level=1).locator("..").get_by_text("Cancelled").count() == 1
    assert api(stack, "GET", f"/api/orchestrate/task/{rejected['id']}").json()["status"] == "cancelled"


def test_a_question_shows_with_an_answer_box_and_the_answer_lets_its_expert_go_on(stack, page):
    plan = scripted("A question in the browser", [
        {**subtask("ask", "python-backend", sim="ask=1"), "verify": ["python3 -m pytest -q"]},
        subtask("free", "fullstack"),
    ])
    task = api(stack, "POST", "/api/orchestrate/task", json={"description": plan}).json()
    page.goto(f"{stack.url}/tasks/{task['id']}")
    question = page.get_by_test_id("question-panel")
    question.wait_for(timeout=90_000)
    page.get_by_role("heading", name="A question for you").wait_for()
    assert "which database should it use, PostgreSQL or SQLite?" in question.get_by_test_id("question").inner_text()
    page.locator("[data-testid=plan-node][data-subtask=ask][data-status=awaiting_input]").wait_for()
    page.locator("[data-testid=plan-node][data-subtask=free][data-status=completed]").wait_for(timeout=60_000)
    assert_contrast(page, "a question waiting for its answer")
    page.screenshot(path=str(ARTIFACTS / "ui-question.png"), full_page=True)

    page.get_by_role("link", name="Mission Board").first.click()
    card = page.locator(f"[data-testid=task-card][data-task='{task['id']}']")
    card.get_by_test_id("task-waiting").wait_for()
    assert "1 question for you" in card.inner_text()
    page.wait_for_function(f"() => ({waiting_for_a_person()})() === {expected_waiting(stack)}")
    card.click()

    question.get_by_label("Your answer").fill("PostgreSQL, from the browser")
    question.get_by_role("button", name="Send answer").click()
    question.wait_for(state="detached")
    page.locator("[data-testid=plan-node][data-subtask=ask][data-status=completed]").wait_for(timeout=120_000)
    page.locator("[data-testid=plan-node][data-subtask=ask]").click()
    answered = page.get_by_test_id("question-answered")
    answered.wait_for()
    assert "Answer: PostgreSQL, from the browser" in answered.inner_text()
    done = api(stack, "GET", f"/api/orchestrate/task/{task['id']}").json()
    assert next(s for s in done["subtasks"] if s["id"] == "ask")["answer"] == "PostgreSQL, from the browser"
    page.set_viewport_size(PHONE)
    page.wait_for_function("document.documentElement.scrollWidth <= 375")
    page.set_viewport_size(DESKTOP)
