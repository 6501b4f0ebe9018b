"""The `aether` command against the running stack, as a user runs it (a subprocess, AETHER_URL)."""

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.plans import scripted, subtask
from tests.support.ports import free_port

pytestmark = pytest.mark.e2e

AETHER = str(Path(sys.executable).parent / "aether")
DOTS = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")  # rich's "dots" spinner


def env(stack, **extra: str) -> dict[str, str]:
    return {**os.environ, "AETHER_URL": stack.url, "AETHER_API_KEY": stack.api_key or "", "COLUMNS": "160", "NO_COLOR": "1", **extra}


def aether(stack, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([AETHER, *args], env=env(stack), capture_output=True, text=True, timeout=180, **kwargs)


def two_step(title: str, sim: str = "") -> str:
    return scripted(title, [subtask("schema", "database-expert"), subtask("api", "python-backend", deps=["schema"], sim=sim)])


def rest(stack, path: str) -> dict:
    return httpx.get(f"{stack.url}{path}", headers=stack.auth_headers(), timeout=30).json()


def test_submit_follow_prints_every_subtask_with_its_agent_and_the_final_result(stack):
    done = aether(stack, "submit", two_step("CLI follow"), "--follow")
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    task_id = out.split("submitted task ", 1)[1].split()[0]
    task = rest(stack, f"/api/orchestrate/task/{task_id}")
    for line in task["logs"]:
        assert out.count(line) == 1, line  # every event once, in the order of the log
    positions = [out.index(line) for line in task["logs"]]
    assert positions == sorted(positions)
    for subtask_id, agent_type in (("schema", "database-expert"), ("api", "python-backend")):
        lines = [line for line in out.splitlines() if f"Subtask {subtask_id} " in line]
        assert lines and all(agent_type in line for line in lines), lines  # each line names the agent type
    assert "--- final result ---" in out and task["final_result"].strip().splitlines()[-1] in out
    assert out.rstrip().splitlines()[-1].startswith("completed · 2/2 subtasks done")


def test_follow_in_a_terminal_draws_a_live_table_with_spinners_and_elapsed_times(stack):
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [AETHER, "submit", two_step("CLI terminal", sim="latency_ms=600"), "--follow"],
        env={**env(stack), "TERM": "xterm-256color"},
        stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
    )
    os.close(terminal)
    screen = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the other side closed: the command exited
            break
        if not chunk:
            break
        screen += chunk
    assert process.wait(30) == 0
    os.close(controller)
    text = screen.decode(errors="replace")
    assert DOTS & set(text), "no spinner was drawn while a subtask ran"
    assert "✓" in text and "database-expert" in text and "python-backend" in text
    assert "2/2 subtasks done" in text and "final result" in text
    assert "\x1b[" in text  # drawn in place, not printed line by line


def test_follow_resumes_after_the_gateway_dies_and_prints_nothing_twice(stack):
    process = subprocess.Popen(
        [AETHER, "submit", two_step("CLI resume", sim="latency_ms=1500"), "--follow"],
        env=env(stack), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "Subtask api started" in line:
            old = stack.kill("gateway")
            break
    for line in process.stdout:
        lines.append(line)
    assert process.wait(120) == 0, "".join(lines)
    stack.wait_healthy_again("gateway", old)
    out = "".join(lines)
    task_id = out.split("submitted task ", 1)[1].split()[0]
    task = rest(stack, f"/api/orchestrate/task/{task_id}")
    assert "reconnecting" in out
    for line in task["logs"]:
        assert out.count(line) == 1, line


def test_tasks_and_task_show_what_the_api_holds(stack):
    done = aether(stack, "submit", two_step("CLI show"), "--follow", "--json")
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout[done.stdout.index("{"):])
    assert task["status"] == "completed"

    listing = aether(stack, "tasks", "--limit", "500")
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if line.startswith(task["id"]))
    assert "completed" in row and "2/2" in row and "CLI show" in row

    shown = aether(stack, "task", task["id"], "--logs")
    assert shown.returncode == 0
    for expected in ("schema", "api", "database-expert", "python-backend", "final result", task["logs"][-1]):
        assert expected in shown.stdout
    assert f"{task['usage']['total_tokens']:,} tokens" in shown.stdout

    as_json = json.loads(aether(stack, "task", task["id"], "--json").stdout)
    assert as_json == rest(stack, f"/api/orchestrate/task/{task['id']}")
    assert json.loads(aether(stack, "tasks", "--status", "completed", "--json").stdout)[0]["status"] == "completed"


def test_agents_lists_the_templates_and_the_pool(stack):
    done = aether(stack, "agents")
    assert done.returncode == 0, done.stderr
    for template in ("python-backend", "react-frontend", "database-expert", "devops-expert", "fullstack", "testing-expert"):
        assert template in done.stdout
    pool = httpx.get(f"{stack.url}/api/agents", headers=stack.auth_headers(), timeout=10)
    if pool.status_code == 200:
        for agent in pool.json():
            assert agent["id"] in done.stdout
    else:
        assert "this gateway does not serve /api/agents" in done.stdout


def test_a_failed_task_exits_1_with_the_reason(stack):
    done = aether(stack, "submit", "CLI fail [[sim planner.fail=400]]", "--follow")
    assert done.returncode == 1
    assert "planning failed" in done.stdout and "error: planning failed" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("failed · no plan yet")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["task", "00000000-0000-7000-8000-000000000000"], 1, "no task with id"),
        (["task", "00000000-0000-7000-8000-000000000000", "--follow"], 1, "no task with id"),
        (["submit", "   "], 1, "description must not be empty"),
        (["submit", "x", "--master", "nobody"], 1, "unknown master_deployment_id 'nobody'"),
        (["tasks", "--limit", "0"], 1, "--limit must be between 1 and 500"),
    ],
)
def test_refusals_exit_1_with_the_gateways_message(stack, args, code, message):
    done = aether(stack, *args)
    assert done.returncode == code
    assert message in done.stderr


def test_an_unreachable_gateway_exits_2_and_names_the_setting(stack):
    done = aether(stack, "--url", f"http://127.0.0.1:{free_port()}", "tasks")
    assert done.returncode == 2
    assert "cannot reach the Aether gateway" in done.stderr and "AETHER_URL" in done.stderr


def test_without_a_valid_key_the_gateways_refusal_says_how_to_get_one(stack, tmp_path):
    for key in ("", "not-the-key-0000000000"):
        done = subprocess.run(
            [AETHER, "tasks"], env=env(stack, AETHER_API_KEY=key), cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1
        assert "missing or invalid API key" in done.stderr and "AETHER_API_KEY" in done.stderr


def test_the_description_can_come_from_standard_input(stack):
    done = aether(stack, "submit", "-", "--json", input=two_step("From stdin"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["description"].startswith("From stdin")



def submitted_id(out: str) -> str:
    return out.split("submitted task ", 1)[1].split()[0]


def test_task_steps_prints_the_failing_run_the_fix_the_passing_run_and_the_checks(stack):
    plan = scripted("CLI steps", [{**subtask("calc", "python-backend"), "verify": ["python3 -m pytest -q"]}])
    followed = aether(stack, "submit", plan, "--follow")
    assert followed.returncode == 0, followed.stderr + followed.stdout
    assert "  calc · step 1 list_files . → ok" in followed.stdout  # live, one line each
    assert "  calc · Aether's check, round 1: python3 -m pytest -q → passed" in followed.stdout
    task_id = submitted_id(followed.stdout)
    steps = rest(stack, f"/api/orchestrate/task/{task_id}/subtasks/calc/steps")

    shown = aether(stack, "task", task_id, "--steps")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "checks pass (round 1)" in out and "calc: pass (round 1): python3 -m pytest -q ✓" in out
    assert "repository: passes its checks (python3 -m pytest -q)" in out
    listed = [line for line in out.splitlines() if line.startswith("  ") and line[2:5].strip().isdigit()]
    assert [line.split()[:2] for line in listed] == [[str(s["index"]), "check" if s["kind"] == "check" else s["tool"]] for s in steps]
    runs = [line for line in listed if " run_command " in line]
    assert "exit 0" not in runs[0] and "exit " in runs[0] and "exit 0" in runs[-1]  # failed first, then passed
    assert out.index("Aether's checks, round 1") < out.index(listed[-1])
    assert any(" write_file   ok " in line and line.endswith("bytes)") for line in listed)
    assert "assert 5 == 6" not in out  # the output only with --verbose
    assert "assert 5 == 6" in aether(stack, "task", task_id, "--steps", "--verbose").stdout


def test_task_steps_shows_tool_errors_and_what_the_model_was_told(stack):
    """Needs no sandbox: `tools=broken` calls tools wrongly four times, then writes a file."""
    followed = aether(stack, "submit", scripted("CLI tool errors", [subtask("wrong", "fullstack", sim="tools=broken")]), "--follow")
    assert followed.returncode == 0, followed.stderr + followed.stdout
    assert "  wrong · step 1 delete_everything " in followed.stdout and "→ error" in followed.stdout
    assert "  wrong · step 5 write_file notes.md (33 bytes) → ok" in followed.stdout
    task_id = submitted_id(followed.stdout)

    summary = aether(stack, "task", task_id)
    row = next(line for line in summary.stdout.splitlines() if line.split()[1:3] == ["wrong", "fullstack"])
    assert "5 (4 err)" in row
    shown = aether(stack, "task", task_id, "--steps", "-v")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "wrong · fullstack · completed · 5 tool calls, 4 tool error(s)" in out
    assert "  1  delete_everything error" in out and "│ error: unknown tool 'delete_everything'" in out
    assert "  2  write_file   error" in out and "not valid JSON" in out
    assert "  3  write_file   error" in out and "../../escape.txt" in out
    assert "  5  write_file   ok" in out and "notes.md (33 bytes)" in out
    as_json = json.loads(aether(stack, "task", task_id, "--steps", "--json").stdout)
    assert as_json["steps"]["wrong"] == rest(stack, f"/api/orchestrate/task/{task_id}/subtasks/wrong/steps")


# -- issue 15: what waits for a person ------------------------------------------------------------

APPROVAL_PLAN = scripted("CLI approval", [subtask("a", "fullstack"), subtask("b", "python-backend", ["a"])])


def editor(tmp_path: Path, subtasks: list[dict]) -> str:
    """An $EDITOR that replaces the plan's subtasks, as a person editing it would."""
    script = tmp_path / "edit.py"
    script.write_text(
        "import json, sys\n"
        "path = sys.argv[1]\n"
        "plan = json.load(open(path))\n"
        f"plan['subtasks'] = {subtasks!r}\n"
        "json.dump(plan, open(path, 'w'))\n"
    )
    return f"{sys.executable} {script}"


def waiting_task(stack, description: str = APPROVAL_PLAN, **extra) -> dict:
    response = httpx.post(f"{stack.url}/api/orchestrate/task", json={"description": description, **extra}, headers=stack.auth_headers(), timeout=30)
    assert response.status_code == 202, response.text
    task_id = response.json()["id"]
    for _ in range(600):
        task = rest(stack, f"/api/orchestrate/task/{task_id}")
        if task["status"] == "awaiting_approval" or any(s["status"] == "awaiting_input" for s in task["subtasks"]):
            return task
        time.sleep(0.1)
    raise AssertionError(task["logs"])


def test_submit_approve_plan_shows_the_plan_asks_and_follows_what_was_approved(stack):
    done = aether(stack, "submit", APPROVAL_PLAN, "--approve-plan", "--follow", input="y\n")
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    task_id = out.split("submitted task ", 1)[1].split()[0]
    task = rest(stack, f"/api/orchestrate/task/{task_id}")
    assert "waits for your approval" in out and "Approve this plan?" in out
    table = out.split("waits for your approval", 1)[1].split("Approve this plan?", 1)[0]
    assert "Build part a" in table and "python-backend" in table  # the plan, before anything ran
    assert out.index("approved: the plan runs") < out.index("Executing the approved plan")
    assert task["status"] == "completed" and task["approval"]["decision"] == "approved"
    for line in task["logs"]:
        assert out.count(line) == 1, line  # the events before the approval are not printed twice


def test_submit_approve_plan_edits_the_plan_in_the_editor_or_rejects_it_with_a_reason(stack, tmp_path):
    mine = [{"id": "mine", "description": "All of it, my way", "agent_type": "fullstack", "depends_on": [], "verify": []}]
    edited = subprocess.run([AETHER, "submit", APPROVAL_PLAN, "--approve-plan"], env={**env(stack), "EDITOR": editor(tmp_path, mine)},
                            input="e\n", capture_output=True, text=True, timeout=180)
    assert edited.returncode == 0, edited.stderr + edited.stdout
    assert "approved with your plan of 1 subtask(s)" in edited.stdout
    task_id = edited.stdout.split("submitted task ", 1)[1].split()[0]
    assert [s["id"] for s in rest(stack, f"/api/orchestrate/task/{task_id}")["subtasks"]] == ["mine"]

    bad = [{"id": "x", "description": "d", "agent_type": "cobol-expert", "depends_on": ["ghost"]}]
    refused = subprocess.run([AETHER, "submit", APPROVAL_PLAN, "--approve-plan"], env={**env(stack), "EDITOR": editor(tmp_path, bad)},
                             input="e\nr\nnot like this\n", capture_output=True, text=True, timeout=180)
    assert refused.returncode == 1, refused.stdout
    assert "the plan cannot be used:" in refused.stdout and "unknown agent type 'cobol-expert'" in refused.stdout
    assert "'ghost', which the plan does not contain" in refused.stdout
    assert "rejected: task" in refused.stdout and "is cancelled" in refused.stdout
    task_id = refused.stdout.split("submitted task ", 1)[1].split()[0]
    rejected = rest(stack, f"/api/orchestrate/task/{task_id}")
    assert rejected["status"] == "cancelled" and rejected["approval"]["reason"] == "not like this"

    left = aether(stack, "submit", APPROVAL_PLAN, "--approve-plan", input="")  # no terminal answer: it waits
    assert left.returncode == 0 and "the plan waits: aether approve" in left.stdout
    # The stack is shared: a task left waiting would count against the tenant's active limit.
    waiting_id = left.stdout.split("submitted task ", 1)[1].split()[0]
    assert aether(stack, "reject", waiting_id, "cleaning up").returncode == 0


def test_approve_reject_and_answer_commands_with_their_refusals(stack, tmp_path):
    task = waiting_task(stack, require_plan_approval=True)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"subtasks": [{"id": "a", "description": "d", "agent_type": "nope", "depends_on": ["a2"]},
                                             {"id": "a2", "description": "d", "agent_type": "fullstack", "depends_on": ["a"]}]}))
    invalid = aether(stack, "approve", task["id"], "--plan", str(plan))
    assert invalid.returncode == 1 and "unknown agent type 'nope'" in invalid.stdout and "cycle" in invalid.stdout
    approved = aether(stack, "approve", task["id"])
    assert approved.returncode == 0 and f"approved: task {task['id']} is executing" in approved.stdout
    again = aether(stack, "approve", task["id"])
    assert again.returncode == 1 and "not awaiting approval" in again.stderr and "(HTTP 409)" in again.stderr
    other = waiting_task(stack, require_plan_approval=True)
    rejected = aether(stack, "reject", other["id"], "too big")
    assert rejected.returncode == 0 and "is cancelled (plan rejected: too big)" in rejected.stdout

    asking = waiting_task(stack, scripted("CLI question", [{**subtask("ask", "python-backend", sim="ask=1"), "verify": ["python3 -m pytest -q"]}]))
    shown = aether(stack, "task", asking["id"])
    assert "ask asks: Question 1 from ask: which database" in shown.stdout
    assert f'answer with: aether answer {asking["id"]} ask' in shown.stdout
    answered = aether(stack, "answer", asking["id"], "ask", "-", input="SQLite, from the CLI\n")
    assert answered.returncode == 0 and "answered: subtask ask" in answered.stdout
    twice = aether(stack, "answer", asking["id"], "ask", "again")
    assert twice.returncode == 1 and "has no open question" in twice.stderr
    unknown = aether(stack, "answer", asking["id"], "nope", "x")
    assert unknown.returncode == 1 and "(HTTP 404)" in unknown.stderr
    done = aether(stack, "task", asking["id"], "--follow")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rest(stack, f"/api/orchestrate/task/{asking['id']}")["subtasks"][0]["answer"] == "SQLite, from the CLI"
