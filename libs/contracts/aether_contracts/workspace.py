"""The task's workspace: the files experts write, where they are stored, and how they become a
repository.

File contents live in the JetStream Object Store bucket `workspace` (see `topology`), named by
task, subtask and content digest, so an object is never rewritten: two agents racing on the same
subtask cannot leave content that differs from what the task state lists. The task state lists
the files (`Subtask.files`, `TaskState.synthesis_files`), the refused ones with their reason, and
the path conflicts between subtasks that ran in parallel.

The functions here are pure and deterministic (they run inside compare-and-set mutations): the
commit order of a task's subtasks, the files each one sees, and the conflicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from .state import Subtask, TaskState

SYNTHESIS = "synthesis"
"""`WorkspaceFile.written_by` of the files Jason's synthesis wrote (subtask files name their id)."""


class WorkspaceFile(BaseModel):
    path: str
    """Relative, `/`-separated, checked by `aether_core.files.check_path`."""
    size: int
    sha256: str
    written_by: str
    """The subtask id, or `synthesis`."""
    object: str
    """Its name in the Object Store bucket."""


class RefusedFile(BaseModel):
    path: str
    """As the reply gave it, cut and with control characters escaped (it may be hostile)."""
    reason: str
    written_by: str = ""


class PathConflict(BaseModel):
    """Subtasks that ran in parallel (neither depends on the other) wrote the same path
    differently, or one wrote a file where the other wrote a directory."""

    path: str
    subtask_ids: list[str]
    kind: str = "content"
    """`content` (two versions of one file) or `file-directory`."""
    resolved_by_synthesis: bool | None = None
    """Set when the repository is assembled: whether Jason's synthesis wrote the path."""


class RepositoryInfo(BaseModel):
    """The task's git repository, assembled by the synthesizer and stored in the Object Store."""

    head: str = ""
    """The commit id of the synthesis commit."""
    branch: str = "main"
    commits: list[str] = Field(default_factory=list)
    """One line per commit, oldest first: `<sha> <subject>`."""
    files: int = 0
    bytes: int = 0
    bundle_object: str = ""
    bundle_size: int = 0
    archive_object: str = ""
    archive_size: int = 0
    skipped: list[RefusedFile] = Field(default_factory=list)
    """Files left out of a commit (a file where an earlier commit has a directory, or reverse)."""
    error: str | None = None
    """Set when the repository could not be assembled; the task still has its text result."""
    assembled_at: datetime | None = None

    @property
    def ready(self) -> bool:
        return bool(self.head) and self.error is None


def _part(value: str) -> str:
    return quote(value, safe="")


def file_object(task_id: str, written_by: str, sha256: str) -> str:
    scope = "synthesis" if written_by == SYNTHESIS else f"subtasks/{_part(written_by)}"
    return f"tasks/{_part(task_id)}/{scope}/{sha256}"


def bundle_object(task_id: str, sha256: str) -> str:
    """Named by its content like every object: a retry's new repository is a new object, never a
    rewrite (a rewrite must purge the old chunks, which no service may: aether_contracts.permissions)."""
    return f"tasks/{_part(task_id)}/repository/{sha256}.bundle"


def archive_object(task_id: str, sha256: str) -> str:
    return f"tasks/{_part(task_id)}/repository/{sha256}.tar.gz"


def commit_order(state: TaskState) -> list[Subtask]:
    """The completed subtasks, every one after all of its dependencies; ties in plan order."""
    done = {s.id: s for s in state.subtasks if s.status == "completed"}
    placed: set[str] = set()
    order: list[Subtask] = []
    pending = [s for s in state.subtasks if s.id in done]
    while pending:
        for subtask in pending:
            if all(d in placed or d not in done for d in subtask.depends_on):
                break
        else:  # a cycle cannot pass plan validation; keep plan order rather than loop
            subtask = pending[0]
        order.append(subtask)
        placed.add(subtask.id)
        pending.remove(subtask)
    return order


def ancestors(state: TaskState, subtask_id: str) -> set[str]:
    """Every subtask `subtask_id` depends on, directly or through others."""
    by_id = {s.id: s for s in state.subtasks}
    seen: set[str] = set()
    stack = list(by_id[subtask_id].depends_on) if subtask_id in by_id else []
    while stack:
        current = stack.pop()
        if current in seen or current not in by_id:
            continue
        seen.add(current)
        stack.extend(by_id[current].depends_on)
    return seen


def files_in_order(subtasks: Iterable[Subtask]) -> dict[str, WorkspaceFile]:
    """Path -> file after applying each subtask's files in the given order (last writer wins)."""
    view: dict[str, WorkspaceFile] = {}
    for subtask in subtasks:
        for file in subtask.files:
            view[file.path] = file
    return view


def visible_files(state: TaskState, subtask_id: str) -> dict[str, WorkspaceFile]:
    """What a subtask finds in its working tree: its ancestors' files, in commit order."""
    seen = ancestors(state, subtask_id)
    return files_in_order(s for s in commit_order(state) if s.id in seen)


def final_files(state: TaskState) -> dict[str, WorkspaceFile]:
    """The files of the repository's last commit: every subtask's, then the synthesis's."""
    view = files_in_order(commit_order(state))
    for file in state.synthesis_files:
        view[file.path] = file
    return dict(sorted(view.items()))


def _clashes(path: str, other: str) -> bool:
    return other.startswith(path + "/") or path.startswith(other + "/")


def detect_conflicts(state: TaskState) -> list[PathConflict]:
    """Paths written by completed subtasks that ran in parallel, with different contents."""
    done = commit_order(state)
    lineage = {s.id: ancestors(state, s.id) for s in done}
    found: dict[tuple[str, str], set[str]] = {}
    for i, first in enumerate(done):
        for second in done[i + 1 :]:
            if first.id in lineage[second.id] or second.id in lineage[first.id]:
                continue  # one saw the other's files: overwriting them was deliberate
            theirs = {f.path: f.sha256 for f in second.files}
            for file in first.files:
                other = theirs.get(file.path)
                if other is not None and other != file.sha256:
                    found.setdefault((file.path, "content"), set()).update((first.id, second.id))
                    continue
                for path in theirs:
                    if _clashes(file.path, path):
                        key = (min(file.path, path, key=len), "file-directory")
                        found.setdefault(key, set()).update((first.id, second.id))
    order = {s.id: n for n, s in enumerate(done)}
    return [
        PathConflict(path=path, kind=kind, subtask_ids=sorted(ids, key=order.__getitem__))
        for (path, kind), ids in sorted(found.items())
    ]


def record_subtask_files(
    state: TaskState, subtask: Subtask, files: list[WorkspaceFile], refused: list[RefusedFile]
) -> list[PathConflict]:
    """Record what a completed subtask wrote; log refusals and conflicts it introduced.

    Returns the new conflicts. Deterministic: conflicts are recomputed from the whole state, so
    a re-run subtask (a retry) replaces its earlier files and their conflicts.
    """
    subtask.files = list(files)
    subtask.refused_files = [r.model_copy(update={"written_by": subtask.id}) for r in refused]
    if files:
        size = sum(f.size for f in files)
        state.record(
            "workspace.files",
            f"Subtask {subtask.id} wrote {len(files)} file(s), {size} bytes",
            subtask_id=subtask.id,
            data={"paths": [f.path for f in files][:50]},
        )
    for item in subtask.refused_files:
        state.record(
            "workspace.refused",
            f"Subtask {subtask.id}: file {item.path!r} refused: {item.reason}",
            level="warning",
            subtask_id=subtask.id,
        )
    known = {(c.path, c.kind, tuple(c.subtask_ids)) for c in state.conflicts}
    state.conflicts = detect_conflicts(state)
    new = [c for c in state.conflicts if (c.path, c.kind, tuple(c.subtask_ids)) not in known]
    for conflict in new:
        what = "different versions of" if conflict.kind == "content" else "a file and a directory at"
        state.record(
            "workspace.conflict",
            f"Path conflict: {', '.join(conflict.subtask_ids)} ran in parallel and wrote {what} "
            f"{conflict.path}; Jason's synthesis is asked to resolve it",
            level="warning",
            data=conflict.model_dump(),
        )
    return new
