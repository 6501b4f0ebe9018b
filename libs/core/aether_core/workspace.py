"""The task's workspace, worked out from its state: the commit order of its subtasks, the files
each one sees, the conflicts between those that ran in parallel (the files themselves and their
names are aether_contracts.workspace).

Pure and deterministic: these run inside compare-and-set mutations.
"""

from __future__ import annotations

from collections.abc import Iterable

from aether_contracts.state import EventKind, Subtask, SubtaskStatus, TaskState
from aether_contracts.workspace import PathConflict, RefusedFile, WorkspaceFile

from . import dag


def commit_order(state: TaskState) -> list[Subtask]:
    """The completed subtasks, every one after all of its dependencies; ties in plan order."""
    done = [s for s in state.subtasks if s.status == SubtaskStatus.COMPLETED]
    by_id = {s.id: s for s in done}
    return [by_id[i] for i in dag.order(dag.graph(done))]


def ancestors(state: TaskState, subtask_id: str) -> set[str]:
    """Every subtask `subtask_id` depends on, directly or through others."""
    return dag.ancestors(dag.graph(state.subtasks), subtask_id)


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
            EventKind.WORKSPACE_FILES,
            f"Subtask {subtask.id} wrote {len(files)} file(s), {size} bytes",
            subtask_id=subtask.id,
            data={"paths": [f.path for f in files][:50]},
        )
    for item in subtask.refused_files:
        state.record(
            EventKind.WORKSPACE_REFUSED,
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
            EventKind.WORKSPACE_CONFLICT,
            f"Path conflict: {', '.join(conflict.subtask_ids)} ran in parallel and wrote {what} "
            f"{conflict.path}; Jason's synthesis is asked to resolve it",
            level="warning",
            data=conflict.model_dump(),
        )
    return new
