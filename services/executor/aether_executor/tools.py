"""The tools an expert works with in its subtask's worktree, offered with the OpenAI function-calling
protocol. The names and arguments are part of Aether's public API (README, "Experts that act").

Every path is relative to the worktree and passes the same rules as a file in a reply
(`aether_core.files.check_path`); reads and writes open each directory without following links,
so nothing outside the worktree is reached. `run_command` runs `sh -c` in the sandbox
(`aether_core.sandbox`), never without one. Whatever goes wrong is a tool error the model reads
and can correct (`ToolResult.ok` False): an unknown tool, arguments that are not JSON or miss a
field, a refused path, binary content, a command that fails. Nothing here raises to the loop.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aether_core.files import UnsafePath, check_path, read_inside, shown, write_inside
from aether_core.sandbox import Sandbox, SandboxLimits

READ_LIMIT = 64_000
"""Characters of a file `read_file` returns at once (the rest with `offset`)."""
LIST_LIMIT = 500
"""Entries `list_files` returns."""
SKIPPED_DIRS = frozenset({".git", "__pycache__", ".pytest_cache", "node_modules", ".mypy_cache", ".ruff_cache", ".venv"})
"""Not listed (and not committed): tools' caches and the repository itself."""


def _function(name: str, description: str, properties: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False},
        },
    }


PATH = {"type": "string", "description": "relative to the workspace root, e.g. app/main.py"}
TOOLS: list[dict[str, Any]] = [
    _function("list_files", "List the files under a directory of the workspace (recursively, with sizes).",
              {"path": {**PATH, "description": "a directory relative to the workspace root; '.' for all"}}, ["path"]),
    _function("read_file", "Read a text file of the workspace.",
              {"path": PATH, "offset": {"type": "integer", "description": "first character to return (default 0)"}}, ["path"]),
    _function("write_file", "Create or replace a file of the workspace with the given content.",
              {"path": PATH, "content": {"type": "string"}}, ["path", "content"]),
    _function("edit_file", "Replace one exact occurrence of `old` by `new` in a file of the workspace.",
              {"path": PATH, "old": {"type": "string", "description": "text that occurs exactly once"},
               "new": {"type": "string"}}, ["path", "old", "new"]),
    _function("run_command", "Run a shell command (sh -c) in the workspace root, in a sandbox without network; "
              "returns the exit code and the output.",
              {"command": {"type": "string"}, "timeout_s": {"type": "number", "description": "at most the configured limit"}},
              ["command"]),
]
TOOL_NAMES = frozenset(t["function"]["name"] for t in TOOLS)
"""What the toolbox runs."""
ASK_USER = "ask_user"
"""Answered by a person, not by the toolbox: the loop pauses on it (`acting.Asked`, issue 15)."""
ASK_USER_TOOL = _function(
    ASK_USER,
    "Ask the person who gave the task one short question, when it needs a decision only they can make "
    "(a choice the task leaves open). Your work pauses until they answer; the answer is this call's result. "
    "Do not ask what you can find out with the other tools.",
    {"question": {"type": "string", "description": "one question, with the options if there are some"}},
    ["question"],
)
OFFERED: list[dict[str, Any]] = [*TOOLS, ASK_USER_TOOL]
"""What an expert is offered: the toolbox's tools and `ask_user`."""


@dataclass
class ToolResult:
    ok: bool
    text: str
    """What the model reads (the `role: tool` message)."""
    exit_code: int | None = None
    output: str | None = None
    """A command's (bounded) output, for the step log."""
    changed: list[str] = field(default_factory=list)
    """Paths a write or an edit changed."""
    misuse: bool = False
    """The call itself was wrong (unknown tool, bad arguments, refused path): what the loop's
    bound on consecutive tool errors counts. A command that fails is not a misuse."""


def error(message: str) -> ToolResult:
    return ToolResult(False, f"error: {message}", misuse=True)


@dataclass
class Toolbox:
    root: Path | None
    """The worktree; None until `open_root` gave it (its checkout runs while the model thinks)."""
    sandbox: Sandbox
    limits: SandboxLimits
    max_file_bytes: int = 1_000_000
    open_root: Callable[[], Awaitable[Path]] | None = None

    async def ready(self) -> Path:
        if self.root is None:
            assert self.open_root is not None, "a toolbox needs its worktree"
            self.root = await self.open_root()
        return self.root

    async def call(self, name: str, raw_arguments: str) -> ToolResult:
        await self.ready()
        if name not in TOOL_NAMES:
            return error(f"unknown tool {name!r}; the tools are {', '.join(sorted(TOOL_NAMES))}")
        try:
            arguments = json.loads(raw_arguments or "{}", strict=False)
        except json.JSONDecodeError as exc:
            return error(f"the arguments are not valid JSON ({exc.msg} at column {exc.colno}): {raw_arguments[:200]!r}")
        if not isinstance(arguments, dict):
            return error("the arguments must be a JSON object")
        try:
            return await getattr(self, name)(**arguments)
        except TypeError as exc:
            return error(f"bad arguments for {name}: {exc}")
        except UnsafePath as exc:
            return error(f"the path {exc}")
        except OSError as exc:
            return error(f"{exc.strerror or exc}")

    # -- the tools ---------------------------------------------------------------------------

    async def list_files(self, path: str = ".") -> ToolResult:
        assert self.root is not None
        base = self.root if path.strip() in ("", ".", "./") else self.root / check_path(path)
        if not _inside(self.root, base) or not base.is_dir() or base.is_symlink():
            return error(f"{shown(path)!r} is not a directory of the workspace")
        entries: list[str] = []
        more = 0
        for directory, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not Path(directory, d).is_symlink())
            for name in sorted(files):
                if name == ".git":
                    continue  # a worktree's link to its repository
                full = Path(directory, name)
                info = full.lstat()
                if len(entries) >= LIST_LIMIT:
                    more += 1
                    continue
                kind = "" if stat.S_ISREG(info.st_mode) else " (link)" if stat.S_ISLNK(info.st_mode) else " (special)"
                entries.append(f"{full.relative_to(self.root).as_posix()}  {info.st_size} bytes{kind}")
        listing = "\n".join(entries) or "(no files)"
        if more:
            listing += f"\n[… {more} more file(s) not listed]"
        return ToolResult(True, listing)

    async def read_file(self, path: str, offset: int = 0) -> ToolResult:
        assert self.root is not None
        if not isinstance(offset, int) or offset < 0:
            return error("offset must be a non-negative integer")
        content, size = read_inside(str(self.root), path, self.max_file_bytes)
        if b"\x00" in content:
            return error(f"{shown(path)!r} is a binary file ({size} bytes): not shown")
        text = content.decode("utf-8", errors="replace")
        part = text[offset : offset + READ_LIMIT]
        if offset + READ_LIMIT < len(text) or size > len(content):
            part += f"\n[… cut by Aether: {size} bytes in all; read on with offset={offset + READ_LIMIT}]"
        return ToolResult(True, part if part else "(empty file)")

    async def write_file(self, path: str, content: str) -> ToolResult:
        assert self.root is not None
        if not isinstance(content, str):
            return error("content must be a string")
        data = content.encode("utf-8")
        if len(data) > self.max_file_bytes:
            return error(f"the content is {len(data)} bytes; a file may have at most {self.max_file_bytes}")
        if "\x00" in content:
            return error("the content contains NUL characters (only text files are written)")
        clean = check_path(path)
        existed = (self.root / clean).exists()
        write_inside(str(self.root), clean, data)
        return ToolResult(True, f"{'replaced' if existed else 'created'} {clean} ({len(data)} bytes)", changed=[clean])

    async def edit_file(self, path: str, old: str, new: str) -> ToolResult:
        assert self.root is not None
        if not isinstance(old, str) or not isinstance(new, str) or not old:
            return error("old and new must be strings, and old must not be empty")
        clean = check_path(path)
        content, size = read_inside(str(self.root), clean, self.max_file_bytes + 1)
        if size > self.max_file_bytes or b"\x00" in content:
            return error(f"{clean} cannot be edited (binary or over {self.max_file_bytes} bytes)")
        text = content.decode("utf-8", errors="replace")
        found = text.count(old)
        if found != 1:
            return error(f"`old` occurs {found} times in {clean}; it must occur exactly once (add context to it)")
        write_inside(str(self.root), clean, text.replace(old, new, 1).encode("utf-8"))
        return ToolResult(True, f"edited {clean}: replaced {len(old)} characters by {len(new)}", changed=[clean])

    async def run_command(self, command: str, timeout_s: float | None = None) -> ToolResult:
        root = await self.ready()
        if not isinstance(command, str) or not command.strip():
            return error("command must be a non-empty string")
        if not self.sandbox.available:
            return error(f"commands cannot run on this agent: {self.sandbox.reason} (they never run unsandboxed)")
        limits = self.limits
        if timeout_s is not None:
            if not isinstance(timeout_s, int | float) or timeout_s <= 0:
                return error("timeout_s must be a positive number")
            limits = SandboxLimits(**{**limits.__dict__, "timeout_s": min(float(timeout_s), limits.timeout_s)})
        started = time.monotonic()
        result = await self.sandbox.run(command, root, limits)
        took = time.monotonic() - started
        if result.timed_out:
            head = f"timed out after {limits.timeout_s:g}s: the command and everything it started were stopped"
        elif result.killed_by:
            head = f"killed ({result.killed_by})"
        else:
            head = f"exit code {result.exit_code}"
        text = f"{head} ({took:.1f}s)\n{result.output}" if result.output else f"{head} ({took:.1f}s), no output"
        ok = result.exit_code == 0 and not result.timed_out
        return ToolResult(ok, text, exit_code=result.exit_code, output=result.output)


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False
