"""The task's repository: one commit per completed subtask in dependency order (author = its
agent type, message = the subtask), then Jason's synthesis commit (the README, and the files
Jason wrote to resolve path conflicts). No broker in here.

The repository is built in memory (the synthesizer may run with a read-only root filesystem)
from the Object Store, and stored back there as a git bundle and a `.tar.gz` of its files.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

import nats.errors

from aether_contracts.state import EventKind, TaskState, utcnow
from aether_contracts.workspace import (
    SYNTHESIS,
    RefusedFile,
    RepositoryInfo,
    WorkspaceFile,
    archive_object,
    bundle_object,
)
from aether_core.files import ExtractedFile, FileLimits, extract_files, quote_file, write_inside
from aether_core.gitrepo import CommitSpec, History, memory_history, subtask_commit
from aether_core.templates import MasterConfig
from aether_core.workspace import commit_order, files_in_order, final_files
from aether_core.workspace_store import WorkspaceStore

log = logging.getLogger("aether.synthesizer.repository")

LISTED_FILES = 300
CONFLICT_VERSION_CHARS = 8_000
CONFLICTS_CHARS = 48_000
README = "README.md"


def workspace_brief(state: TaskState, contents: dict[str, bytes], nonce: str) -> str:
    """The repository's files and each path conflict with every version (framed with `nonce`)."""
    files = final_files(state)
    if not files:
        return (
            "The experts wrote no files. Your answer becomes the README.md of the task's "
            "repository: say what was built and how to use it."
        )
    lines = [
        "The task's repository has one commit per subtask above, in dependency order; yours "
        "comes last. Its files (path, bytes, written by):",
    ]
    for file in list(files.values())[:LISTED_FILES]:
        lines.append(f"- {file.path} ({file.size} bytes, {file.written_by})")
    if len(files) > LISTED_FILES:
        lines.append(f"- … and {len(files) - LISTED_FILES} more")
    if state.conflicts:
        lines += [
            "",
            "Path conflicts to resolve: subtasks that ran in parallel wrote the same path "
            "differently. For each, write the file in its final form in a fenced block whose info "
            "string is the language and `path=<path>`, as the experts did; a conflict you leave "
            "unresolved keeps the version of the later commit.",
        ]
        by_subtask = {s.id: s for s in state.subtasks}
        left = CONFLICTS_CHARS
        for conflict in state.conflicts:
            lines += ["", f"### {conflict.path}: conflict between {', '.join(conflict.subtask_ids)}"]
            for subtask_id in conflict.subtask_ids:
                subtask = by_subtask.get(subtask_id)
                mine = [f for f in (subtask.files if subtask else []) if f.path == conflict.path]
                if not mine:
                    names = [f.path for f in subtask.files] if subtask else []
                    lines.append(f"{subtask_id} wrote {', '.join(names[:5])} there (a file/directory clash)")
                    continue
                assert subtask is not None  # `mine` is empty without it
                limit = max(0, min(CONFLICT_VERSION_CHARS, left))
                heading = f"#### Version of {subtask_id} ({subtask.agent_type})"
                content = contents.get(mine[0].object, b"")
                lines.append(quote_file(conflict.path, content, limit, heading, nonce=nonce, written_by=subtask_id))
                left -= min(mine[0].size, limit)
    lines += [
        "",
        "Your answer becomes the repository's README.md (unless you write a README.md file "
        "yourself): say what was built, how the parts fit, and how to run it.",
    ]
    return "\n".join(lines)


def readme(state: TaskState, text: str, files: dict[str, WorkspaceFile]) -> bytes:
    title = " ".join(state.description.split("SIM-PLAN:")[0].split())[:100] or "Aether task"
    lines = [f"# {title}", "", text.strip(), "", "---", "", "## This repository", ""]
    lines.append(
        f"Assembled by Aether for task `{state.id}`: one commit per subtask in dependency order "
        "(author: the agent type), then Jason's synthesis."
    )
    if files:
        lines += ["", "| Path | Bytes | Written by |", "| --- | --- | --- |"]
        lines += [f"| `{f.path}` | {f.size} | {f.written_by} |" for f in files.values() if f.path != README]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Assembly:
    text: str
    """The final result: Jason's reply with the bodies of its files replaced by notes."""
    info: RepositoryInfo
    synthesis_files: list[WorkspaceFile] = field(default_factory=list)
    refused: list[RefusedFile] = field(default_factory=list)
    written: dict[str, bytes] = field(default_factory=dict)
    """What Jason's synthesis wrote (its README included), by path."""

    def apply(self, state: TaskState) -> TaskState:
        """Record the repository in the state (inside the completing compare-and-set)."""
        state.synthesis_files = list(self.synthesis_files)
        state.repository = self.info
        written = {f.path for f in self.synthesis_files}
        for conflict in state.conflicts:
            conflict.resolved_by_synthesis = conflict.path in written
            if not conflict.resolved_by_synthesis:
                state.record(
                    EventKind.WORKSPACE_CONFLICT,
                    f"Path conflict on {conflict.path} was not resolved by the synthesis: the "
                    f"repository keeps the version of {conflict.subtask_ids[-1]} (the later commit)",
                    level="warning",
                )
        for item in self.refused:
            state.record(
                EventKind.WORKSPACE_REFUSED,
                f"Synthesis: file {item.path!r} refused: {item.reason}",
                level="warning",
            )
        for item in self.info.skipped:
            state.record(
                EventKind.WORKSPACE_SKIPPED,
                f"Repository: {item.path} left out of {item.written_by}'s commit: {item.reason}",
                level="warning",
            )
        if self.info.error:
            state.record(EventKind.REPOSITORY_FAILED, f"The repository could not be assembled: {self.info.error}", level="error")
        else:
            state.record(
                EventKind.REPOSITORY_ASSEMBLED,
                f"Repository assembled: {len(self.info.commits)} commit(s), {self.info.files} file(s), "
                f"{self.info.bytes} bytes; bundle {self.info.bundle_size} bytes",
                data={"head": self.info.head},
            )
        return state


class Repository:
    def __init__(self, store: WorkspaceStore, limits: FileLimits) -> None:
        self.store = store
        self.limits = limits

    async def brief_files(self, state: TaskState) -> dict[str, bytes]:
        """Every version of each conflicting path, for the synthesis prompt's workspace brief."""
        conflicted = {c.path for c in state.conflicts}
        wanted = [f for s in commit_order(state) for f in s.files if f.path in conflicted]
        return await self.store.read_files(wanted)

    async def materialize(self, state: TaskState, directory: Path, extra: dict[str, bytes] | None = None) -> None:
        """The repository's files as they stand (every subtask's, then `extra`) written under
        `directory`, to run the task's checks on (`write_inside`: nothing lands outside it)."""
        view = files_in_order(commit_order(state))
        contents = await self.store.read_files(view.values())
        files = {path: contents.get(f.object, b"") for path, f in view.items()}
        files.update(extra or {})

        def write() -> None:
            for path, content in files.items():
                write_inside(str(directory), path, content)

        await asyncio.to_thread(write)

    async def assemble(self, state: TaskState, reply: str, master: MasterConfig) -> Assembly:
        extraction = extract_files(reply, self.limits, declared_only=True)
        when = utcnow()
        try:
            order = commit_order(state)
            contents = await self.store.read_files(f for s in order for f in s.files)
            history = memory_history()
            skipped = await asyncio.to_thread(_commit_subtasks, history, order, contents)
            files = {f.path: f.content for f in extraction.files}
            if README not in files:
                view = {**final_files(state), **{p: _pending(p, c) for p, c in files.items()}}
                files[README] = readme(state, extraction.text, dict(sorted(view.items())))
            stored = await self.store.store_files(
                state.id, SYNTHESIS, [ExtractedFile(p, c) for p, c in files.items()]
            )
            message = _synthesis_message(state, master)
            built = await asyncio.to_thread(_finish, history, master.id, message, files, state.id, when)
            skipped += built.skipped
            bundle = await self.store.put(bundle_object(state.id, sha256(built.bundle).hexdigest()), built.bundle)
            archive = await self.store.put(archive_object(state.id, sha256(built.archive).hexdigest()), built.archive)
        except (nats.errors.Error, TimeoutError):
            raise  # NATS is away: the synthesis is redelivered and tries again
        except Exception as exc:
            log.exception("task %s: repository assembly failed", state.id)
            return Assembly(extraction.text, RepositoryInfo(error=repr(exc), assembled_at=when), [], extraction.refused)
        info = RepositoryInfo(
            head=history.head.decode() if history.head else "",
            commits=[f"{sha.decode()} {subject}" for sha, subject in history.commits],
            files=len(history.tree),
            bytes=sum(history.sizes.values()),
            bundle_object=bundle.name,
            bundle_size=bundle.size,
            archive_object=archive.name,
            archive_size=archive.size,
            skipped=skipped,
            assembled_at=when,
        )
        return Assembly(extraction.text, info, stored, extraction.refused, files)


def _pending(path: str, content: bytes) -> WorkspaceFile:
    return WorkspaceFile(path=path, size=len(content), sha256="", written_by=SYNTHESIS, object="")


def _synthesis_message(state: TaskState, master: MasterConfig) -> str:
    parts = len(commit_order(state))
    return (
        f"Synthesis by {master.name}: integrate {parts} subtask(s)\n\n"
        f"README.md says what was built and how to run it.\n\nAether-Task: {state.id}"
    )


def _commit_subtasks(history: History, order, contents: dict[str, bytes]) -> list[RefusedFile]:
    skipped = []
    for subtask in order:
        for item in history.commit(subtask_commit(subtask, contents)):
            skipped.append(RefusedFile(path=item.path, reason=item.reason, written_by=subtask.id))
    return skipped


@dataclass
class _Built:
    bundle: bytes
    archive: bytes
    skipped: list[RefusedFile]


def _finish(
    history: History, author: str, message: str, files: dict[str, bytes], task_id: str, when
) -> _Built:
    skipped = [
        RefusedFile(path=item.path, reason=item.reason, written_by=SYNTHESIS)
        for item in history.commit(CommitSpec(author, message, files, when))
    ]
    return _Built(history.bundle(), history.archive(f"aether-{task_id}", when), skipped)

