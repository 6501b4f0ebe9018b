"""Issue 13: experts that act. The stack as `make up` runs it (the simulator's scripted tool runs,
real bubblewrap sandboxes, real worktrees): an expert writes code and tests, runs them, sees them
fail, fixes them, and its subtask completes only when Aether's own run of its checks passes;
every tool call is a step on the stream, in the steps route and in the trace; bad tool calls are
errors the model reads; the step bound stops a model that never ends; a command cannot reach the
network, the agent's environment or anything outside the worktree."""

import base64
import io
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.support import sse
from tests.support.plans import scripted, subtask
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

CHECK = ["python3 -m pytest -q"]


@pytest.fixture(scope="module")
def stack():
    running = Stack(env={"AETHER_EXPERT_MAX_STEPS": "12", "AETHER_SANDBOX_TIMEOUT_S": "20"}).start()
    yield running
    running.stop()


def checked(id: str, agent_type: str = "python-backend", deps=(), sim: str = "") -> dict:
    return {**subtask(id, agent_type, deps, sim=sim), "verify": CHECK}


async def steps_of(client, task_id: str, subtask_id: str) -> list[dict]:
    response = await client.get(f"/api/orchestrate/task/{task_id}/subtasks/{subtask_id}/steps")
    assert response.status_code == 200, response.text
    return response.json()


async def repository_files(client, task_id: str) -> dict[str, str]:
    archive = (await client.get(f"/api/orchestrate/task/{task_id}/repository.tar.gz")).content
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}


async def test_an_expert_writes_runs_sees_a_failure_fixes_it_and_its_checks_pass(stack):
    async with stack.client() as client:
        task = await stack.submit(client, scripted("Acts", [checked("a"), checked("b", "testing-expert", ["a"])]))
        async with client.stream("GET", f"/api/orchestrate/task/{task['id']}/stream") as response:
            live = [m async for m in sse.messages(response)]
        done = await stack.wait_task(client, task["id"])
        steps = await steps_of(client, task["id"], "a")
        files = await repository_files(client, task["id"])
    assert done["status"] == "completed", done["logs"]
    a = next(s for s in done["subtasks"] if s["id"] == "a")
    assert a["verification"]["passed"] and a["verification"]["rounds"] == 1
    assert a["steps"] == sum(s["kind"] == "tool" for s in steps) >= 8 and a["tool_errors"] == 0
    tools = [(s["tool"], s["exit_code"]) for s in steps if s["kind"] == "tool"]
    runs = [code for tool, code in tools if tool == "run_command"]
    assert runs[0] not in (0, None) and runs[-1] == 0  # it failed first, then passed
    assert ("edit_file", None) in tools and tools.index(("edit_file", None)) < len(tools) - 1
    [check] = [s for s in steps if s["kind"] == "check"]
    assert check["ok"] and check["arguments"] == CHECK[0]
    # The work is in the repository, fixed; the caches the commands made are not.
    assert "return sum(values)\n" in files["sim_a.py"] and "tests/test_sim_b.py" in files
    assert not any("__pycache__" in p or ".pytest_cache" in p for p in files)
    # The repository as a whole passes every subtask's checks, and the task says so.
    assert done["verification"]["passed"] and {c["command"] for c in done["verification"]["checks"]} == set(CHECK)
    assert any("The repository passes its 1 check(s)" in line for line in done["logs"])
    # Live: each step reached the task's stream as it happened.
    streamed = [m.data for m in live if m.event == "task.step"]
    assert {(s["subtask_id"], s["index"], s["kind"]) for s in streamed} >= {(s["subtask_id"], s["index"], s["kind"]) for s in steps}


async def test_a_failing_check_gets_a_fix_round_and_one_that_keeps_failing_fails_the_subtask(stack):
    async with stack.client() as client:
        lazy = await stack.submit(client, scripted("Lazy", [checked("l", sim="tools=lazy")]))
        stubborn = await stack.submit(client, scripted("Stubborn", [checked("s", sim="tools=stubborn")]))
        lazy, stubborn = [await stack.wait_task(client, t["id"]) for t in (lazy, stubborn)]
        stubborn_steps = await steps_of(client, stubborn["id"], "s")
    [done] = lazy["subtasks"]
    assert done["status"] == "completed" and done["verification"]["passed"] and done["verification"]["rounds"] == 2
    failed = next(s for s in stubborn["subtasks"] if s["id"] == "s")
    assert failed["status"] == "failed" and "still fail after 2 fix round(s)" in failed["error"]
    assert "assert 5 == 6" in failed["error"]  # the failing output, for people and for the replan
    assert failed["verification"]["rounds"] == 3 and not failed["verification"]["passed"]
    assert sum(s["kind"] == "check" for s in stubborn_steps) == 3


async def test_bad_tool_calls_are_errors_the_model_reads_and_too_many_in_a_row_fail_it(stack):
    async with stack.client() as client:
        recovers = await stack.submit(client, scripted("Broken", [subtask("r", "fullstack", sim="tools=broken")]))
        never = await stack.submit(client, scripted("Forever broken", [subtask("f", "fullstack", sim="tools=broken_forever")]))
        recovers, never = [await stack.wait_task(client, t["id"]) for t in (recovers, never)]
        steps = await steps_of(client, recovers["id"], "r")
        requests = await stack.sim_requests(client, task_id=recovers["id"], role="expert")
    [r] = recovers["subtasks"]
    assert r["status"] == "completed" and r["tool_errors"] == 4
    errors = [s["summary"] for s in steps if not s["ok"]]
    assert any("unknown tool 'delete_everything'" in e for e in errors)
    assert any("not valid JSON" in e for e in errors)
    assert any("contains '..'" in e for e in errors)
    assert any("bad arguments for read_file" in e for e in errors)
    # The model read each error as the tool's result, in the protocol's own form.
    replies = [m for m in requests[-1]["messages"] if m["role"] == "tool"]
    assert len(replies) >= 5 and all(m["tool_call_id"] for m in replies)
    f = next(s for s in never["subtasks"] if s["id"] == "f")
    assert f["status"] == "failed" and "5 tool calls in a row were wrong" in f["error"]


async def test_a_model_that_never_stops_is_stopped_by_the_step_bound(stack):
    async with stack.client() as client:
        task = await stack.submit(client, scripted("Loops", [subtask("x", "fullstack", sim="tools=loop")]))
        done = await stack.wait_task(client, task["id"])
    x = next(s for s in done["subtasks"] if s["id"] == "x")
    assert x["status"] == "failed" and "stopped after 12 tool calls" in x["error"] and x["steps"] == 12


def command(text: str) -> str:
    return "cmd64=" + base64.b64encode(text.encode()).decode()


async def run_in_sandbox(stack, client, text: str) -> str:
    task = await stack.submit(client, scripted("Command", [subtask("c", "fullstack", sim=command(text))]))
    done = await stack.wait_task(client, task["id"])
    steps = await steps_of(client, done["id"], "c")
    [run] = [s for s in steps if s["tool"] == "run_command"]
    return run["output"]


async def test_a_command_reaches_no_network_no_secret_and_nothing_outside_the_worktree(stack):
    port = stack.http_port
    planted = Path(f"/usr/aether-escape-{uuid.uuid4().hex}")
    async with stack.client() as client:
        network = await run_in_sandbox(
            stack, client,
            f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\" && echo CONNECTED || echo REFUSED",
        )
        environment = await run_in_sandbox(stack, client, "env; cat /proc/1/environ 2>&1 | tr '\\0' '\\n'")
        outside = await run_in_sandbox(
            stack, client,
            f"touch {planted} 2>&1; ls {stack.data_dir} 2>&1; cat {stack.data_dir}/api-key 2>&1; echo done",
        )
        slow = await run_in_sandbox(stack, client, "sleep 1000")
    assert "REFUSED" in network and "CONNECTED" not in network
    key = stack.api_key
    assert key not in environment and "OPENAI_API_KEY" not in environment and "AETHER_NATS_URL" not in environment
    assert "nats://" not in environment
    assert key not in outside and "done" in outside and not planted.exists()
    assert "timed out after 20s" in slow


async def test_a_repository_that_fails_its_checks_gets_a_fix_up_round_and_says_how_it_ended(stack):
    # Each subtask passes its checks in its own worktree; together, `a`'s test fails (it assumes
    # it is the only test): the synthesizer's run on the assembled repository finds it.
    plan = [checked("a", sim="alone=1"), checked("b", "testing-expert")]
    async with stack.client() as client:
        task = await stack.submit(client, scripted("Together", plan))
        done = await stack.wait_task(client, task["id"], timeout=120)
        files = await repository_files(client, task["id"])
    assert done["status"] == "completed", done["logs"]
    ids = [s["id"] for s in done["subtasks"]]
    assert ids == ["a", "b", "fixup-1"]
    fixup = done["subtasks"][2]
    assert fixup["status"] == "completed" and set(fixup["depends_on"]) == {"a", "b"}
    assert "tests/test_sim_a.py" in fixup["description"] and fixup["verification"]["passed"]
    assert any("The repository fails 1 check(s)" in line and "fixup-1" in line for line in done["logs"])
    assert done["verification"]["passed"] and done["round"] == 2
    assert "simulated fix-up" in files["tests/test_sim_a.py"]
    assert any("The repository passes its 1 check(s)" in line for line in done["logs"])
