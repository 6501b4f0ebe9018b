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

from . import steps as step_text

RUNNING = {"executing", "creating_agent"}
MARKS = {
    "completed": ("✓", "green"),
    "failed": ("✗", "red"),
    "cancelled": ("⊘", "yellow"),
    "pending": ("○", "bright_black"),
    "awaiting_input": ("?", "bold yellow"),
}
TASK_STYLE = {
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
    "pending": "bright_black",
    "planning": "cyan",
    "awaiting_approval": "bold yellow",
    "executing": "bold cyan",
    "synthesizing": "magenta",
}
LAST_STEP_WIDTH = 120
"""Columns a terminal needs for the live table to show each running subtask's last step."""
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


def steps_cell(subtask: dict[str, Any]) -> str:
    count, errors = subtask.get("steps", 0), subtask.get("tool_errors", 0)
    if not count:
        return "–"
    return f"{count} ({errors} err)" if errors else str(count)


def checks_cell(subtask: dict[str, Any]) -> Text:
    verification = subtask.get("verification")
    if verification:
        return Text("✓ pass", style="green") if verification["passed"] else Text("✗ fail", style="red")
    return Text("not run" if subtask.get("verify") else "–", style="bright_black")


def subtask_table(
    task: dict[str, Any],
    spinners: dict[str, Spinner] | None = None,
    last_steps: dict[str, dict[str, Any]] | None = None,
) -> Table:
    """`last_steps` (the live view): the newest step of each running subtask, in a column."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("", width=2, no_wrap=True)
    table.add_column("subtask", no_wrap=True)
    table.add_column("agent", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    # Columns for what experts that act do, when some did (or a subtask has checks).
    acted = any(s.get("steps") for s in task["subtasks"]) or bool(last_steps)
    checked = any(s.get("verify") or s.get("verification") for s in task["subtasks"])
    if acted:
        table.add_column("steps", justify="right", no_wrap=True)
    if checked:
        table.add_column("checks", no_wrap=True)
    if last_steps is not None and acted:
        table.add_column("last step", overflow="ellipsis", no_wrap=True, max_width=48)
    table.add_column("depends on", overflow="fold", min_width=10)
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
        cells: list[RenderableType] = [
            mark,
            subtask["id"],
            subtask["agent_type"],
            Text(subtask_state(subtask), style=MARKS.get(status, ("", "cyan"))[1]),
            duration(subtask_seconds(subtask)),
            f"{tokens:,}" if tokens else "–",
        ]
        if acted:
            cells.append(steps_cell(subtask))
        if checked:
            cells.append(checks_cell(subtask))
        if last_steps is not None and acted:
            last = last_steps.get(subtask["id"]) if status in RUNNING else None
            cells.append(step_cell(last) if last else Text("–", style="bright_black"))
        cells.append(", ".join(subtask["depends_on"]) or "–")
        table.add_row(*cells)
    return table


def step_cell(step: dict[str, Any]) -> Text:
    return Text.assemble(
        (step_text.line(step), ""), " → ", (step_text.outcome(step), "green" if step["ok"] else "red")
    )


def step_event(step: dict[str, Any], round_: int) -> str:
    """One line for a step as it happens: `  a · step 5 run_command pytest -q → exit 1 (310 ms)`."""
    what = f"Aether's check, round {round_}: {step_text.target(step)}" if step["kind"] == "check" else (
        f"step {step['index']} {step_text.line(step)}"
    )
    return f"  {step['subtask_id']} · {what} → {step_text.outcome(step)} ({step_text.duration(step['duration_ms'])})"


class StepRounds:
    """Which round of checks a live step belongs to (the stream sends steps one by one)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int, str, int]] = set()
        self._last: dict[str, tuple[int, str]] = {}
        self._rounds: dict[tuple[str, int], int] = {}

    def add(self, step: dict[str, Any]) -> int | None:
        """The step's round (0 for a tool call); None when it was seen already."""
        key = (step["subtask_id"], *step_text.key(step))
        if key in self.seen:
            return None
        self.seen.add(key)
        run = (step["subtask_id"], step["attempt"])
        if step["kind"] == "check" and self._last.get(step["subtask_id"]) != (step["attempt"], "check"):
            self._rounds[run] = self._rounds.get(run, 0) + 1
        self._last[step["subtask_id"]] = (step["attempt"], step["kind"])
        return self._rounds.get(run, 0) if step["kind"] == "check" else 0


class LiveView:
    """A table of subtasks that animates in place, with the task's log scrolling above it."""

    def __init__(self, console: Console, task_id: str) -> None:
        self.console = console
        self.task_id = task_id
        self.task: dict[str, Any] | None = None
        self.spinners: dict[str, Spinner] = {}
        self.last_steps: dict[str, dict[str, Any]] = {}
        self.rounds = StepRounds()
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
            # The last step of each running subtask, where the terminal has room for it.
            wide = self.console.width >= LAST_STEP_WIDTH
            parts.append(subtask_table(task, self.spinners, self.last_steps if wide else None))
        else:
            parts.append(Spinner("dots", text=" Jason is planning…", style="cyan"))
        return Group(*parts)

    def event(self, event: dict[str, Any]) -> None:
        self.live.console.print(Text(event["log"], style=LEVEL_STYLE.get(event["level"], "")))

    def step(self, step: dict[str, Any]) -> None:
        if self.rounds.add(step) is not None:
            self.last_steps[step["subtask_id"]] = step
            self.live.refresh()

    def state(self, task: dict[str, Any]) -> None:
        self.task = task
        self.live.refresh()

    def retry(self, attempt: int, reason: str) -> None:
        self.live.console.print(Text(f"connection lost ({reason}); reconnecting (attempt {attempt})…", style="yellow"))

    def note(self, line: str) -> None:
        self.live.console.print(Text(line, style="bold yellow"), soft_wrap=True)


class PlainView:
    """One line per event, for pipes, files and CI logs."""

    def __init__(self, console: Console, task_id: str) -> None:
        self.console = console
        self.task_id = task_id
        self.task: dict[str, Any] | None = None
        self.rounds = StepRounds()

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

    def step(self, step: dict[str, Any]) -> None:
        round_ = self.rounds.add(step)
        if round_ is not None:
            self.console.print(step_event(step, round_), markup=False, highlight=False, soft_wrap=True)

    def state(self, task: dict[str, Any]) -> None:
        self.task = task

    def retry(self, attempt: int, reason: str) -> None:
        self.console.print(f"connection lost ({reason}); reconnecting (attempt {attempt})…", markup=False)

    def note(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def result_text(console: Console, title: str, text: str) -> None:
    if console.is_terminal:
        console.rule(title)
        console.print(Markdown(text))
    else:
        console.print(f"--- {title} ---", markup=False)
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_task(
    console: Console,
    task: dict[str, Any],
    *,
    logs: bool = False,
    steps: dict[str, list[dict[str, Any]]] | None = None,
    verbose: bool = False,
) -> None:
    """`steps` (each subtask's, from the steps route): printed after the table."""
    console.print(Text.assemble(("task ", "bold"), (task["id"], "bold")))
    console.print(Text(summary_line(task), style=TASK_STYLE.get(task["status"], "")))
    console.print(Text(task["description"]), soft_wrap=True)
    if task["subtasks"]:
        console.print()
        console.print(subtask_table(task))
        print_verifications(console, task)
    if steps is not None:
        print_steps(console, task, steps, verbose=verbose)
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


def print_verifications(console: Console, task: dict[str, Any]) -> None:
    """Each subtask's checks and the repository's: passed or not, and which commands."""
    checked = [s for s in task["subtasks"] if s.get("verification") or s.get("verify")]
    if checked:
        console.print()
        console.print(Text("checks", style="bold"))
    for subtask in checked:
        verification = subtask.get("verification")
        said = step_text.verification_line(verification) if verification else "not run yet: " + "; ".join(subtask["verify"])
        style = "" if not verification else "green" if verification["passed"] else "red"
        console.print(Text.assemble(f"  {subtask['id']}: ", (said, style)), soft_wrap=True)
        if verification and verification.get("note"):
            console.print(Text(f"    {verification['note']}", style="yellow"), soft_wrap=True)
    repository = task.get("verification")
    if repository:
        failing = [c["command"] for c in repository.get("checks") or [] if not c["passed"]]
        verdict = "passes its checks" if repository["passed"] else "does NOT pass its checks"
        commands = ", ".join(failing) if failing else ", ".join(c["command"] for c in repository.get("checks") or [])
        console.print(
            Text.assemble("repository: ", (verdict, "green" if repository["passed"] else "bold red"),
                          f" ({'failing: ' if failing else ''}{commands})" if commands else ""),
            soft_wrap=True,
        )


def print_steps(console: Console, task: dict[str, Any], steps: dict[str, list[dict[str, Any]]], *, verbose: bool = False) -> None:
    """Each subtask's steps: number, tool, outcome, time, what it did; the output with `verbose`."""
    for subtask in task["subtasks"]:
        console.print()
        parts = [subtask["id"], subtask["agent_type"], subtask_state(subtask)]
        count = subtask.get("steps", 0)
        parts.append(f"{count} tool call{'' if count == 1 else 's'}, {subtask.get('tool_errors', 0)} tool error(s)")
        verification = subtask.get("verification")
        if verification:
            rounds = verification.get("rounds", 1)
            parts.append(f"checks pass (round {rounds})" if verification["passed"] else f"checks FAIL after {rounds} round(s)")
        console.print(Text(" · ".join(parts), style="bold"), soft_wrap=True)
        listed = step_text.ordered(steps.get(subtask["id"], []))
        if not listed:
            console.print("  no steps" + ("" if subtask["status"] != "pending" else ": not started yet"), markup=False)
            continue
        runs = len({s["attempt"] for s in listed})
        previous_attempt = None
        for step, round_, starts in step_text.rounds(listed):
            if runs > 1 and step["attempt"] != previous_attempt:
                console.print(f"  run {step['attempt']}", markup=False)
            previous_attempt = step["attempt"]
            if starts and step["kind"] == "check":
                console.print(Text(f"  Aether's checks, round {round_}", style="magenta"))
            check = step["kind"] == "check"
            verdict = ("passed" if step["ok"] else "failed") if check else step_text.ending(step)
            ended = step_text.ending(step) if check and step_text.ending(step) not in ("exit 0", "ok") else ""
            console.print(
                Text.assemble(
                    f"  {step['index']:>3}  {'check' if check else step['tool']:<12} ",
                    (f"{verdict:<9}", "green" if step["ok"] else "red"),
                    f" {step_text.duration(step['duration_ms']):>8}  ",
                    step_text.target(step),
                    f" ({ended})" if ended else "",
                ),
                soft_wrap=True,
            )
            if verbose and step.get("output"):
                for text in step["output"].rstrip("\n").split("\n"):
                    console.print(f"         │ {text}", markup=False, highlight=False, soft_wrap=True)
