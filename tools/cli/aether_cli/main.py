"""`aether`: submit coding tasks to an Aether gateway, follow them live, list tasks and agents.

Exit status: 0 when the command (and a followed task) succeeded, 1 when the gateway refused the
request or a followed task failed, 2 when the gateway cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import waiting
from .client import Gateway, GatewayError, Unreachable
from .render import RUNNING, TASK_STYLE, LiveView, PlainView, print_task, result_text, summary_line
from .settings import CLISettings

TASK_STATUSES = ("pending", "planning", "awaiting_approval", "executing", "synthesizing", "completed", "failed", "cancelled")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="aether", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--url", help="the gateway (default: AETHER_URL, else http://127.0.0.1:8000)")
    root.add_argument("--key", help="API key (default: AETHER_API_KEY, else .aether/api-key as `make up` writes it)")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="submit a coding task")
    submit.add_argument("description", help="the task in plain language; '-' reads it from standard input")
    submit.add_argument("--master", help="the master agent that plans and synthesizes (default: jason)")
    submit.add_argument("-f", "--follow", action="store_true", help="show live progress and print the final result")
    submit.add_argument("--approve-plan", action="store_true",
                        help="hold the plan for your approval: it is shown, and you approve, edit ($EDITOR) or reject it here")
    submit.add_argument("--json", action="store_true", help="print the task as JSON")

    tasks = commands.add_parser("tasks", help="list tasks, newest first")
    tasks.add_argument("--status", choices=TASK_STATUSES)
    tasks.add_argument("-n", "--limit", type=int, default=20, help="how many (1-500, default 20)")
    tasks.add_argument("--json", action="store_true")

    task = commands.add_parser("task", help="show one task: subtasks, durations, tokens, result")
    task.add_argument("id")
    task.add_argument("-f", "--follow", action="store_true", help="follow it live until it finishes")
    task.add_argument("--logs", action="store_true", help="print its log too")
    task.add_argument("--steps", action="store_true", help="print each subtask's steps: its expert's tool calls and Aether's checks")
    task.add_argument("-v", "--verbose", action="store_true", help="with --steps: each step's output too")
    task.add_argument("--json", action="store_true", help="print the task as JSON (with --steps: {task, steps})")

    agents = commands.add_parser("agents", help="list the agent templates and the live agent pool")
    agents.add_argument("--json", action="store_true")

    approve = commands.add_parser("approve", help="approve the plan of a task awaiting approval: it runs")
    approve.add_argument("id")
    approve.add_argument("--plan", metavar="FILE", help="a plan of your own instead (JSON; '-' reads standard input)")

    reject = commands.add_parser("reject", help="reject the plan of a task awaiting approval: the task ends cancelled")
    reject.add_argument("id")
    reject.add_argument("reason", help="why ('-' reads it from standard input)")

    answer = commands.add_parser("answer", help="answer the open question of a task's subtask: its expert goes on")
    answer.add_argument("id")
    answer.add_argument("subtask")
    answer.add_argument("answer", help="the answer ('-' reads it from standard input)")
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    console = Console(highlight=False)
    errors = Console(stderr=True, highlight=False)
    settings = CLISettings()
    gateway = Gateway(args.url or settings.url, key=args.key or settings.key())
    try:
        code = COMMANDS[args.command](gateway, args, console)
    except GatewayError as exc:
        errors.print(Text(f"error: {exc.detail} (HTTP {exc.status})", style="red"))
        if exc.status == 401:
            errors.print("set AETHER_API_KEY or --key (`make up` prints a development key, kept in .aether/api-key)", markup=False)
        code = 1
    except Unreachable as exc:
        errors.print(Text(f"error: {exc}", style="red"))
        code = 2
    except KeyboardInterrupt:
        code = 130
    finally:
        gateway.close()
    raise SystemExit(code)


def submit(gateway: Gateway, args: argparse.Namespace, console: Console) -> int:
    description = sys.stdin.read() if args.description == "-" else args.description
    task = gateway.submit(description, args.master, require_plan_approval=args.approve_plan)
    if args.json and not args.follow and not args.approve_plan:
        console.print_json(data=task)
        return 0
    console.print(Text.assemble("submitted task ", (task["id"], "bold")))
    after = 0
    if args.approve_plan:
        planned, after = waiting.wait_for_plan(gateway, task["id"], console)
        if planned["status"] != "awaiting_approval":
            console.print(Text(summary_line(planned), style=TASK_STYLE.get(planned["status"], "")))
            return 0 if planned["status"] == "completed" else 1
        decided = waiting.decide(gateway, planned, console)
        if decided != "approved":
            return 0 if decided == "left" else 1
    if not args.follow:
        console.print(f"follow it with: aether task {task['id']} --follow", markup=False)
        return 0
    return follow(gateway, task["id"], console, as_json=args.json, after=after)


def show_task(gateway: Gateway, args: argparse.Namespace, console: Console) -> int:
    if args.follow:
        return follow(gateway, args.id, console, as_json=args.json)
    task = gateway.task(args.id)
    steps = {s["id"]: gateway.steps(task["id"], s["id"]) for s in task["subtasks"]} if args.steps else None
    if args.json:
        console.print_json(data=task if steps is None else {"task": task, "steps": steps})
    else:
        print_task(console, task, logs=args.logs, steps=steps, verbose=args.verbose)
        for line in waiting.hints(task):
            console.print(Text(line, style="bold yellow"), soft_wrap=True)
    return 1 if task["status"] == "failed" else 0


def follow(gateway: Gateway, task_id: str, console: Console, *, as_json: bool = False, after: int = 0) -> int:
    view = LiveView(console, task_id) if console.is_terminal and not as_json else PlainView(console, task_id)
    task: dict[str, Any] | None = None
    dropped = False
    hinted: set[str] = set()

    def retry(attempt: int, reason: str) -> None:
        nonlocal dropped
        dropped = True
        view.retry(attempt, reason)

    with view:
        for message in gateway.follow(task_id, after=after, on_retry=retry):
            if message.type == "task.event" and not as_json:
                view.event(message.data)
            elif message.type == "task.step" and not as_json:
                view.step(message.data)
            elif message.type == "task.state":
                task = message.data
                if dropped and not as_json:
                    dropped = False
                    missed_steps(gateway, task, view)
                view.state(task)
                if not as_json:
                    for line in waiting.hints(task):
                        if line not in hinted:  # once per plan waiting and per question asked
                            hinted.add(line)
                            view.note(line)
            elif message.type == "error":
                raise GatewayError(message.data["status"], message.data["detail"])
    assert task is not None
    if as_json:
        console.print_json(data=gateway.task(task_id))
    else:
        if task.get("final_result"):
            result_text(console, "final result", task["final_result"])
        if task.get("error"):
            console.print(Text(f"error: {task['error']}", style="red"), soft_wrap=True)
        console.print(Text(summary_line(task), style=TASK_STYLE.get(task["status"], "")))
    return 0 if task["status"] == "completed" else 1


def missed_steps(gateway: Gateway, task: dict[str, Any], view: LiveView | PlainView) -> None:
    """Live steps are not resumed after a reconnect: the steps route has the ones missed (the
    views print each step once)."""
    for subtask in task["subtasks"]:
        if subtask["status"] in RUNNING or subtask.get("steps"):
            try:
                steps = gateway.steps(task["id"], subtask["id"])
            except (GatewayError, Unreachable):
                continue  # the log is for people: the stream goes on without them
            for step in steps:
                view.step(step)


def list_tasks(gateway: Gateway, args: argparse.Namespace, console: Console) -> int:
    if not 1 <= args.limit <= 500:
        raise GatewayError(422, "--limit must be between 1 and 500")
    tasks, total = gateway.tasks(status=args.status, limit=args.limit)
    if args.json:
        console.print_json(data=tasks)
        return 0
    if not tasks:
        console.print("no tasks" + (f" with status {args.status}" if args.status else "") + ": submit one with `aether submit \"…\"`", markup=False)
        return 0
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "status", "done", "age", "tokens"):
        table.add_column(column, no_wrap=True)
    table.add_column("description", overflow="ellipsis", no_wrap=True, max_width=60)
    now = datetime.now(UTC)
    for task in tasks:
        progress = task["progress"]
        age = (now - datetime.fromisoformat(task["created_at"])).total_seconds()
        table.add_row(
            task["id"],
            Text(task["status"], style=TASK_STYLE.get(task["status"], "")),
            f"{progress['completed']}/{progress['total']}",
            _age(age),
            f"{task['usage']['total_tokens']:,}",
            task["description"].splitlines()[0] if task["description"] else "",
        )
    console.print(table)
    if total > len(tasks):
        console.print(f"{len(tasks)} of {total} tasks; more with --limit", markup=False)
    return 0


def list_agents(gateway: Gateway, args: argparse.Namespace, console: Console) -> int:
    templates = gateway.templates()
    pool = gateway.agents()
    if args.json:
        console.print_json(data={"templates": templates, "agents": pool})
        return 0
    table = Table(title="agent templates", title_justify="left", box=None, pad_edge=False, header_style="bold")
    for column in ("type", "name", "tags"):
        table.add_column(column)
    for template in templates:
        table.add_row(template["type"], template["name"], ", ".join(template["tags"][:6]))
    console.print(table)
    console.print()
    if pool is None:
        console.print("agent pool: this gateway does not serve /api/agents", markup=False)
        return 0
    table = Table(title="agent pool", title_justify="left", box=None, pad_edge=False, header_style="bold")
    for column in ("id", "role", "type", "status", "working on", "done", "backend"):
        table.add_column(column, no_wrap=True)
    for agent in pool:
        working = agent.get("current_subtask") or "–"
        if agent.get("current_task") and agent.get("current_subtask"):
            working = f"{agent['current_task'][:8]}…/{agent['current_subtask']}"
        table.add_row(
            agent["id"], agent["role"], agent["agent_type"], agent["status"], working,
            str(agent.get("subtasks_done", 0)), agent.get("backend", ""),
        )
    console.print(table if pool else "agent pool: no agents running")
    return 0


def _age(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{int(value // size)}{unit} ago"
    return f"{int(value)}s ago"


COMMANDS = {
    "submit": submit, "task": show_task, "tasks": list_tasks, "agents": list_agents,
    "approve": waiting.approve, "reject": waiting.reject, "answer": waiting.answer,
}

if __name__ == "__main__":
    main()
