"""The task's workspace: the files experts write, where they are stored, and how they become a
repository.

File contents live in the JetStream Object Store bucket `workspace` (see `topology`), named by
task, subtask and content digest, so an object is never rewritten: two agents racing on the same
subtask cannot leave content that differs from what the task state lists. The task state lists
the files (`Subtask.files`, `TaskState.synthesis_files`), the refused ones with their reason, and
the path conflicts between subtasks that ran in parallel.

What is done with them (the commit order of a task's subtasks, the files each one sees, the
conflicts) is aether_core.workspace: it walks the subtasks' graph (aether_core.dag).
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from pydantic import BaseModel, Field

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
