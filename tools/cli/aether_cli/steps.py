"""An expert's steps in a few words each, as the Mission Board says them (ui/src/steps.ts): what
a tool call did (`write_file app/main.py (412 bytes)`), how it ended, and the rounds of checks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any


def key(step: dict[str, Any]) -> tuple[int, str, int]:
    return step["attempt"], step["kind"], step["index"]


def ordered(steps: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each step once, oldest first: by run, then time (tool calls and checks are numbered apart)."""
    unique = {key(step): step for step in steps}

    def when(step: dict[str, Any]) -> float:
        try:
            return datetime.fromisoformat(step["at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return 0.0

    return sorted(unique.values(), key=lambda s: (s["attempt"], when(s), s["kind"] != "tool", s["index"]))


def _one_line(text: str, limit: int = 120) -> str:
    first, *rest = text.strip().split("\n") or [""]
    line = first if len(first) <= limit else first[: limit - 1] + "…"
    return f"{line} …" if rest else line


def _field(raw: str, name: str) -> str | None:
    """A string field of arguments that are not (or no longer: they are cut) JSON."""
    match = re.search(rf'"{name}"\s*:\s*"((?:[^"\\]|\\.)*)', raw)
    if not match:
        return None
    try:
        return json.loads(f'"{match.group(1)}"')
    except ValueError:
        return match.group(1)


def target(step: dict[str, Any]) -> str:
    """What the step did: `app/main.py (412 bytes)`, `python3 -m pytest -q`."""
    raw = step.get("arguments") or ""
    if step["kind"] == "check":
        return _one_line(raw)
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    args = parsed if isinstance(parsed, dict) else None

    def text(name: str) -> str | None:
        value = args.get(name) if args is not None else _field(raw, name)
        return value if isinstance(value, str) else None

    path = text("path")
    tool = step["tool"]
    if tool == "list_files":
        return path or "."
    if tool == "read_file":
        offset = args.get("offset") if args else None
        return f"{path or '?'}" + (f" from {offset}" if isinstance(offset, int) and offset > 0 else "")
    if tool == "write_file":
        written = re.search(r"\((\d+) bytes\)", step.get("summary", "")) if step.get("ok") else None
        content = text("content")
        size = int(written.group(1)) if written else len(content.encode()) if args is not None and content is not None else None
        return f"{path or '?'}" + ("" if size is None else f" ({size} {'byte' if size == 1 else 'bytes'})")
    if tool == "edit_file":
        return path or "?"
    if tool == "run_command":
        return _one_line(text("command") or "?")
    return _one_line(raw or "{}", 80)


def line(step: dict[str, Any]) -> str:
    return f"{'check' if step['kind'] == 'check' else step['tool']} {target(step)}"


def ending(step: dict[str, Any]) -> str:
    if step.get("exit_code") is not None:
        return f"exit {step['exit_code']}"
    if step["ok"]:
        return "ok"
    summary = step.get("summary", "").lower()
    for start, said in (("timed out", "timed out"), ("killed", "killed"), ("could not run", "not run")):
        if summary.startswith(start):
            return said
    return "error"


def outcome(step: dict[str, Any]) -> str:
    """`exit 1`, `ok`, `error`; a check: `passed` or `failed (not run)`."""
    if step["kind"] == "check":
        verdict = "passed" if step["ok"] else "failed"
        end = ending(step)
        return verdict if end in ("exit 0", "ok") else f"{verdict} ({end})"
    return ending(step)


def duration(ms: int) -> str:
    if ms < 1000:
        return f"{max(0, ms)} ms"
    return f"{ms / 1000:.1f} s"


def rounds(steps: Iterable[dict[str, Any]]) -> Iterable[tuple[dict[str, Any], int, bool]]:
    """Each step with its round of checks in its run (0 for a tool call), and whether it starts
    a new group (a run, or a round of checks)."""
    previous: dict[str, Any] | None = None
    round_ = 0
    for step in steps:
        new_run = previous is None or previous["attempt"] != step["attempt"]
        if new_run:
            round_ = 0
        starts = new_run or previous is None or previous["kind"] != step["kind"]
        if starts and step["kind"] == "check":
            round_ += 1
        yield step, round_ if step["kind"] == "check" else 0, starts
        previous = step


def verification_line(verification: dict[str, Any]) -> str:
    """`pass (round 1): cmd ✓` or `FAIL after 3 rounds: cmd ✗ exit 1`."""
    checks = verification.get("checks") or []
    parts = []
    for check in checks:
        if check["passed"]:
            parts.append(f"{check['command']} ✓")
        else:
            end = f"exit {check['exit_code']}" if check.get("exit_code") is not None else check.get("output_tail", "").split("\n", 1)[0] or "did not finish"
            parts.append(f"{check['command']} ✗ {end}")
    head = (
        f"pass (round {verification.get('rounds', 1)})"
        if verification["passed"]
        else f"FAIL after {verification.get('rounds', 1)} round(s)"
    )
    return f"{head}: " + "; ".join(parts) if parts else head
