"""What the CLI prints: a live view of a task on a terminal, plain lines anywhere else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

RUNNING = {"executing", "creating_agent"}
MARKS = {
    "completed": ("✓", "green"),
    "failed": ("✗", "red"),
    "cancelled": ("⊘", "yellow"),
    "pending": ("○", "bright_black"),
}
TASK_STYLE = {
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
    "pending": "bright_black",
    "planning": "cyan",
    "executing": "bold cyan",
    "synthesizing": "magenta",
}
LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "bold red"}


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def seconds(start: str | None, end: str | None = None) -> float | None:
    began = when(start)
    if began is None:
        return None
    finished = when(end) or datetime.now(UTC)
    return max(0.0, (finished - began).total_seconds())


def duration(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f}s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes}m{rest:02d}s"


def subtask_seconds(subtask: dict[str, Any]) -> float | None:
    if subtask.get("duration_ms") is not None:
        return subtask["duration_ms"] / 1000
    if subtask["status"] in RUNNING:
        return seconds(subtask.get("started_at"))
    return None


def subtask_state(subtask: dict[str, Any]) -> str:
    if subtask["status"] == "pending" and subtask.get("queued_at"):
        return "queued"
    if subtask["status"] == "failed" and subtask.get("blocked_by"):
        return "blocked"
    return subtask["status"].replace("_", " ")


def summary_line(task: dict[str, Any]) -> str:
    progress = task["progress"]
    parts = [
        task["status"],
        f"{progress['completed']}/{progress['total']} subtasks done" if progress["total"] else "no plan yet",
        duration(seconds(task["created_at"], task.get("completed_at"))),
        f"{task['usage']['total_tokens']:,} tokens",
    ]
    if progress["failed"]:
        parts.insert(2, f"{progress['failed']} failed")
    return " · ".join(parts)


def subtask_table(task: dict[str, Any], spinners: dict[str, Spinner] | None = None) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("", width=2, no_wrap=True)
    table.add_column("subtask", no_wrap=True)
    table.add_column("agent", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("depends on", overflow="fold")
    for subtask in task["subtasks"]:
        status = subtask["status"]
        mark: RenderableType
        if status in RUNNING and spinners is not None:
            mark = spinners.setdefault(subtask["id"], Spinner("dots", style="cyan"))
        elif status in RUNNING:
            mark = Text("▶", style="cyan")
        else:
            symbol, style = MARKS.get(status, ("·", ""))
            mark = Text(symbol, style=style)
        tokens = subtask["usage"]["total_tokens"]
        table.add_row(
            mark,
            subtask["id"],
            subtask["agent_type"],
            Text(subtask_state(subtask), style=MARKS.get(status, ("", "cyan"))[1]),
            duration(subtask_seconds(subtask)),
            f"{tokens:,}" if tokens else "–",
            ", ".join(subtask["depends_on"]) or "–",
        )
    return table


class LiveView:
    """A table of subtasks that animates in place, with the task's log scrolling above it."""

    def __init__(self, console: Console, task_id: str) -> None:
        self.console = console
        self.task_id = task_id
        self.task: dict[str, Any] | None = None
        self.spinners: dict[str, Spinner] = {}
        self.live = Live(self, console=console, refresh_per_second=8)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def __rich__(self) -> RenderableType:
        if self.task is None:
            return Spinner("dots", text=f" connecting to task {self.task_id}…")
        task = self.task
        progress = task["progress"]
        done = progress["completed"] + progress["failed"]
        header = Text.assemble(
            ("task ", "bold"), (task["id"], "bold"), "  ",
            (summary_line(task), TASK_STYLE.get(task["status"], "")),
        )
        parts: list[RenderableType] = [header]
        if progress["total"]:
            bar = Table.grid(padding=(0, 1))
            bar.add_row(
                ProgressBar(total=progress["total"], completed=done, width=40),
                Text(f"{done}/{progress['total']}", style="bold"),
            )
            parts.append(bar)
            parts.append(subtask_table(task, self.spinners))
        else:
            parts.append(Spinner("dots", text=" Jason is planning…", style="cyan"))
        return Group(*parts)

    def event(self, event: dict[str, Any]) -> None:
        self.live.console.print(Text(event["log"], style=LEVEL_STYLE.get(event["level"], "")))

    def state(self, task: dict[str, Any]) -> None:
        self.task = task
        self.live.refresh()

    def retry(self, attempt: int, reason: str) -> None:
        self.live.console.print(Text(f"connection lost ({reason}); reconnecting (attempt {attempt})…", style="yellow"))


class PlainView:
    """One line per event, for pipes, files and CI logs."""

    def __init__(self, console: Console, task_id: str) -> None:
        self.console = console
        self.task_id = task_id
        self.task: dict[str, Any] | None = None

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def event(self, event: dict[str, Any]) -> None:
        line = event["log"]
        if event.get("subtask_id") and self.task is not None:
            agent = next((s["agent_type"] for s in self.task["subtasks"] if s["id"] == event["subtask_id"]), None)
            if agent and agent not in line:
                line += f" [{agent}]"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def state(self, task: dict[str, Any]) -> None:
        self.task = task

    def retry(self, attempt: int, reason: str) -> None:
        self.console.print(f"connection lost ({reason}); reconnecting (attempt {attempt})…", markup=False)


def result_text(console: Console, title: str, text: str) -> None:
    if console.is_terminal:
        console.rule(title)
        console.print(Markdown(text))
    else:
        console.print(f"--- {title} ---", markup=False)
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_task(console: Console, task: dict[str, Any], *, logs: bool = False) -> None:
    console.print(Text.assemble(("task ", "bold"), (task["id"], "bold")))
    console.print(Text(summary_line(task), style=TASK_STYLE.get(task["status"], "")))
    console.print(Text(task["description"]), soft_wrap=True)
    if task["subtasks"]:
        console.print()
        console.print(subtask_table(task))
    if task.get("error"):
        console.print(Text(f"error: {task['error']}", style="red"), soft_wrap=True)
    if logs:
        console.print()
        for line in task["logs"]:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    for subtask in task["subtasks"]:
        if subtask.get("error") and not subtask.get("blocked_by"):
            console.print(Text(f"{subtask['id']}: {subtask['error']}", style="red"), soft_wrap=True)
    if task.get("final_result"):
        console.print()
        result_text(console, "final result", task["final_result"])
