"""What waits for a person (issue 15), from the command line: approve, edit or reject a plan,
answer an expert's question; and `submit --approve-plan`, which asks at the terminal."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .client import Gateway, GatewayError

Ask = Callable[[str], str]


def read_text(value: str) -> str:
    """The argument, or standard input when it is '-'."""
    return sys.stdin.read() if value == "-" else value


def read_plan(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise GatewayError(422, f"--plan: cannot read {path}: {exc.strerror}") from None
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GatewayError(422, f"--plan: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(plan, dict):
        raise GatewayError(422, "--plan: the plan must be a JSON object with analysis and subtasks")
    return plan


def editable_plan(task: dict[str, Any]) -> dict[str, Any]:
    """The plan as a person edits it: the fields a plan has, nothing the state adds."""
    keep = ("id", "description", "agent_type", "depends_on", "verify")
    analysis = (task.get("plan") or {}).get("analysis") or ""
    return {"analysis": analysis, "subtasks": [{k: s.get(k) for k in keep} for s in task["subtasks"]]}


def print_refusal(console: Console, error: GatewayError) -> None:
    if error.problems:
        console.print(Text("the plan cannot be used:", style="red"))
        for problem in error.problems:
            console.print(Text(f"  - {problem}", style="red"), soft_wrap=True)
    else:
        console.print(Text(f"error: {error.detail} (HTTP {error.status})", style="red"), soft_wrap=True)


def approve(gateway: Gateway, args: argparse.Namespace, console: Console) -> int:
    plan = read_plan(args.plan) if args.plan else None
    try:
        task = gateway.approve(args.id, plan)
    except GatewayError as refused:
        if refused.status != 422 or not refused.problems:
            raise
        print_refusal(console, refused)
        return 1
    edited = f" with your plan of {len(task['subtasks'])} subtask(s)" if plan is not None else ""
    console.print(f"approved{edited}: task {task['id']} is {task['status']}", markup=False)
    console.print(f"follow it with: aether task {task['id']} --follow", markup=False)
    return 0


def reject(gateway: Gateway, args: argparse.Namespace, console: Console) -> int:
    task = gateway.reject(args.id, read_text(args.reason).strip())
    console.print(f"rejected: task {task['id']} is {task['status']} ({task.get('error')})", markup=False)
    return 0


def answer(gateway: Gateway, args: argparse.Namespace, console: Console) -> int:
    task = gateway.answer(args.id, args.subtask, read_text(args.answer).strip())
    console.print(f"answered: subtask {args.subtask} of task {task['id']} goes on", markup=False)
    return 0


def plan_table(task: dict[str, Any]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("subtask", "agent", "depends on"):
        table.add_column(column, no_wrap=True)
    table.add_column("description", overflow="fold")
    table.add_column("checks", overflow="fold")
    for subtask in task["subtasks"]:
        table.add_row(subtask["id"], subtask["agent_type"], ", ".join(subtask["depends_on"]) or "–",
                      subtask["description"], "; ".join(subtask.get("verify") or []) or "–")
    return table


def wait_for_plan(gateway: Gateway, task_id: str, console: Console) -> tuple[dict[str, Any], int]:
    """Follow the task until its plan waits for approval (or it ended); the state and the last
    event's position, printing each event on the way."""
    position, task = 0, None
    with contextlib.closing(gateway.follow(task_id)) as stream:
        for message in stream:
            if message.type == "task.event":
                position = message.data["seq"]
                console.print(message.data["log"], markup=False, highlight=False, soft_wrap=True)
            elif message.type == "task.state":
                task = message.data
                if task["status"] not in ("pending", "planning"):
                    break
            elif message.type == "error":
                raise GatewayError(message.data["status"], message.data["detail"])
    assert task is not None
    return task, position


def decide(gateway: Gateway, task: dict[str, Any], console: Console, ask: Ask = input) -> str:
    """Show the plan and ask: approve it, edit it (in $EDITOR) and approve that, reject it with a
    reason, or leave it waiting. Returns what was decided: approved, rejected or left."""
    console.print()
    console.print(Text(f"Jason's plan for task {task['id']} waits for your approval:", style="bold"))
    analysis = (task.get("plan") or {}).get("analysis")
    if analysis:
        console.print(Text(analysis), soft_wrap=True)
    console.print(plan_table(task))
    edited: str | None = None
    while True:
        try:
            choice = ask("Approve this plan? [y]es, [e]dit it, [r]eject it, [l]eave it waiting: ").strip().lower()
        except EOFError:
            choice = "l"
        if choice in ("y", "yes"):
            gateway.approve(task["id"])
            console.print("approved: the plan runs", markup=False)
            return "approved"
        if choice in ("e", "edit"):
            edited = edit_in_editor(edited or json.dumps(editable_plan(task), indent=2) + "\n", console)
            if edited is None:
                continue
            try:
                plan = json.loads(edited)
            except json.JSONDecodeError as exc:
                console.print(Text(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); edit it again", style="red"))
                continue
            try:
                approved = gateway.approve(task["id"], plan)
            except GatewayError as refused:
                if refused.status != 422:
                    raise
                print_refusal(console, refused)
                continue
            console.print(f"approved with your plan of {len(approved['subtasks'])} subtask(s): it runs", markup=False)
            return "approved"
        if choice in ("r", "reject"):
            try:
                reason = ask("Why is it rejected? ").strip()
            except EOFError:
                reason = ""
            if not reason:
                console.print("a rejection needs a reason", markup=False)
                continue
            rejected = gateway.reject(task["id"], reason)
            console.print(f"rejected: task {rejected['id']} is {rejected['status']}", markup=False)
            return "rejected"
        if choice in ("l", "leave", "q", "quit", ""):
            console.print(
                f"the plan waits: aether approve {task['id']} [--plan FILE], or aether reject {task['id']} REASON",
                markup=False,
            )
            return "left"
        console.print(f"not a choice: {choice!r}", markup=False)


def edit_in_editor(text: str, console: Console) -> str | None:
    """`text` as the person left it in $VISUAL or $EDITOR (vi by default); None if it failed."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="aether-plan-", delete=False, encoding="utf-8") as file:
        file.write(text)
    try:
        result = subprocess.run([*shlex.split(editor), file.name], check=False)
        if result.returncode != 0:
            console.print(f"the editor ({editor}) exited with {result.returncode}; the plan is unchanged", markup=False)
            return None
        with open(file.name, encoding="utf-8") as edited:
            return edited.read()
    except OSError as exc:
        console.print(f"cannot run the editor {editor!r}: {exc.strerror}; set EDITOR", markup=False)
        return None
    finally:
        os.unlink(file.name)


def hints(task: dict[str, Any]) -> list[str]:
    """What waits for a person in this task, and the command that answers it."""
    lines = []
    if task["status"] == "awaiting_approval":
        lines.append(f"its plan waits for approval: aether approve {task['id']} [--plan FILE], or aether reject {task['id']} REASON")
    for subtask in task["subtasks"]:
        if subtask["status"] == "awaiting_input":
            lines.append(f"{subtask['id']} asks: {subtask.get('question')}")
            lines.append(f"  answer with: aether answer {task['id']} {subtask['id']} \"…\"")
    return lines
