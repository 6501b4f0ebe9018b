"""An expert's desk for one subtask: its dependencies' files in its prompt and in a git worktree,
and its reply turned into files in the Object Store. No broker in here.

The Object Store is the source of truth across machines: a desk reads the files of the
subtask's ancestors from it, builds their commits (the same commits the synthesizer makes) in a
bare repository under the agent's workspace directory, and checks out a worktree there. The
expert's files are written into that worktree (never outside it), committed as its agent type,
and what the commit changed is what gets stored.

The worktree is checked out when the expert first needs it (its first tool call, or a resumed
conversation), not before: an expert that answers in one reply needs no git at all, and its
reply's files are checked against its dependencies' (a changed file is stored, a path that
needs a directory where a file is, or the reverse, is refused) and stored the same way. That is
also how an agent without a writable directory (a read-only container without /tmp) works; the
start-up log says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aether_contracts.state import Subtask, TaskState
from aether_contracts.workspace import RefusedFile, WorkspaceFile
from aether_core.files import ExtractedFile, FileLimits, extract_files, quote_file
from aether_core.gitrepo import (
    TaskCheckouts,
    Worktree,
    commit_message,
    is_writable_dir,
    parent_dirs,
    path_clash,
    subtask_commit,
)
from aether_core.prompting import new_nonce
from aether_core.workspace import ancestors, commit_order, visible_files
from aether_core.workspace_store import WorkspaceStore

log = logging.getLogger("aether.executor.workspace")

CONTEXT_FILE_CHARS = 12_000
"""A dependency's file is cut to this many characters in a dependent's prompt (marked)."""
CONTEXT_FILES_CHARS = 48_000
"""All dependency files together; past this they are listed by path and size only."""
FILE_CACHE_BYTES = 64 * 2**20
"""Workspace files an agent keeps in memory (its own and its dependencies'), by content."""


@dataclass
class Delivery:
    text: str
    files: list[WorkspaceFile]
    refused: list[RefusedFile]


def files_context(
    state: TaskState,
    subtask: Subtask,
    contents: dict[str, bytes],
    *,
    nonce: str | None = None,
    file_chars: int = CONTEXT_FILE_CHARS,
    total_chars: int = CONTEXT_FILES_CHARS,
) -> str:
    """The dependencies' files for the prompt: direct dependencies first, then the others, each
    framed as data with the prompt's `nonce` (see aether_core.prompting)."""
    nonce = nonce or new_nonce(*contents.values())
    visible = visible_files(state, subtask.id)
    if not visible:
        return ""
    direct = set(subtask.depends_on)
    ordered = sorted(visible.values(), key=lambda f: (f.written_by not in direct, f.path))
    agent_types = {s.id: s.agent_type for s in state.subtasks}
    parts = [
        "Files in your working tree, written by the subtasks yours depends on (your files are "
        "added on top of them; write a file again only to change it):"
    ]
    left, unshown = total_chars, []
    for file in ordered:
        if left < 200:  # no room left to show anything useful of it
            unshown.append(file)
            continue
        limit = min(file_chars, left)
        heading = (
            f"### File {file.path} (written by {file.written_by}, "
            f"{agent_types.get(file.written_by, '?')}; {file.size} bytes)"
        )
        content = contents.get(file.object, b"")
        parts += ["", quote_file(file.path, content, limit, heading, nonce=nonce, written_by=file.written_by)]
        left -= min(file.size, limit)
    if unshown:
        parts += ["", f"Not shown (the prompt's budget of {total_chars} characters for files is spent):"]
        parts += [f"- {f.path} ({f.size} bytes, written by {f.written_by})" for f in unshown]
    return "\n".join(parts)


class Workspace:
    def __init__(self, store: WorkspaceStore, limits: FileLimits, directory: Path | None) -> None:
        self.store = store
        self.limits = limits
        self.checkouts: TaskCheckouts | None = None
        if directory is not None:
            try:
                if is_writable_dir(directory):
                    self.checkouts = TaskCheckouts(directory)
            except OSError as exc:
                log.warning("workspace directory %s: %s", directory, exc)
            if self.checkouts is None:
                log.warning(
                    "workspace directory %s is not writable: this agent works without a git worktree",
                    directory,
                )

    async def open(self, state: TaskState, subtask: Subtask) -> Desk:
        """Read the ancestors' files (`Desk.contents`, for the prompt); the worktree waits until
        the expert needs it (`Desk.worktree`)."""
        seen = ancestors(state, subtask.id)
        history = [s for s in commit_order(state) if s.id in seen]
        contents = await self.store.read_files(f for s in history for f in s.files)
        return Desk(self, state, subtask, history if self.checkouts is not None else None, contents)


@dataclass
class Desk:
    workspace: Workspace
    state: TaskState
    subtask: Subtask
    base: list[Subtask] | None
    """The ancestors, in commit order, a worktree starts from (None: this agent works without one)."""
    contents: dict[str, bytes] = field(default_factory=dict)
    """The ancestors' files by object name (what `files_context` shows of them)."""
    checkout: asyncio.Future[Worktree] | None = None
    """The worktree's checkout, once something asked for it."""
    closed: bool = field(default=False)

    @property
    def can_check_out(self) -> bool:
        return self.base is not None

    async def worktree(self) -> Worktree | None:
        """The worktree, checked out (in a thread) on the first call; None without one."""
        if self.base is None:
            return None
        if self.checkout is None:
            if self.closed:
                raise RuntimeError("the desk is closed")
            checkouts = self.workspace.checkouts
            assert checkouts is not None
            specs = [subtask_commit(s, self.contents) for s in self.base]
            self.checkout = asyncio.ensure_future(
                asyncio.to_thread(checkouts.checkout, self.state.id, self.subtask.id, specs)
            )
        return await asyncio.shield(self.checkout)

    async def deliver(self, reply: str, *, worked_in: Iterable[str] | None = None) -> Delivery:
        """The reply's files, committed in the worktree and stored; the text with file notes.

        `worked_in`: the expert may have worked in the worktree with tools, so what it left there
        counts too (a file of the reply wins over one at its path); the names are directories
        that are no part of the work (caches). A worktree nothing asked for holds nothing of the
        expert's: the reply's files are then stored without one."""
        extraction = extract_files(reply, self.workspace.limits)
        refused = list(extraction.refused)
        wanted = {f.path: f.content for f in extraction.files}
        worktree = await self.worktree() if self.checkout is not None else None
        if worktree is not None and worked_in is not None:
            left, skipped = await asyncio.to_thread(worktree.changes, self.workspace.limits, worked_in)
            wanted = {**left, **wanted}
            refused += [RefusedFile(path=s.path, reason=s.reason) for s in skipped]
        if worktree is not None:
            changed, skipped = await asyncio.to_thread(
                worktree.commit, wanted, self.subtask.agent_type, commit_message(self.subtask)
            )
            refused += [RefusedFile(path=s.path, reason=s.reason) for s in skipped]
            files = [ExtractedFile(path, content) for path, content in sorted(changed.items())]
        else:
            files, clashes = changed_files(visible_files(self.state, self.subtask.id), extraction.files)
            refused += clashes
        stored = await self.workspace.store.store_files(self.state.id, self.subtask.id, files)
        return Delivery(extraction.text, stored, refused)

    async def close(self) -> None:
        """Remove the worktree (once its checkout is done, even if the caller was cancelled)."""
        if self.closed:
            return
        self.closed = True
        if self.checkout is not None:
            await asyncio.shield(_discard(self.checkout))


def changed_files(before: dict[str, WorkspaceFile], files: list[ExtractedFile]) -> tuple[list[ExtractedFile], list[RefusedFile]]:
    """The reply's files that add or change one of `before` (the dependencies' files), as a
    commit of them on top would: a path refused where a file of `before` (or an earlier one of
    the reply) needs to be a directory, or a directory a file (`path_clash`)."""
    files_at = set(before)
    directories = {d for path in before for d in parent_dirs(path)}
    kept: list[ExtractedFile] = []
    refused: list[RefusedFile] = []
    for file in files:
        clash = path_clash(file.path, files_at, directories)
        if clash is not None:
            refused.append(RefusedFile(path=file.path, reason=clash))
            continue
        files_at.add(file.path)
        directories.update(parent_dirs(file.path))
        old = before.get(file.path)
        if old is None or old.sha256 != file.sha256:
            kept.append(file)
    return kept, refused


async def _discard(checkout: asyncio.Future[Worktree]) -> None:
    try:
        worktree = await checkout
    except Exception:  # a failed checkout left nothing behind (TaskCheckouts cleans up)
        return
    await asyncio.to_thread(worktree.close)
