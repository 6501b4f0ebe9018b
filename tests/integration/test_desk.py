"""An expert's desk against a real nats-server (the Object Store) and real git worktrees: the
worktree is checked out only when the expert first needs it, so a one-reply expert costs no git."""

from datetime import UTC, datetime

import nats

from aether_contracts.state import Subtask, SubtaskStatus, TaskState, TaskStatus
from aether_core import declare
from aether_core.files import ExtractedFile, FileLimits
from aether_core.workspace_store import WorkspaceStore
from aether_executor.workspace import Workspace


async def _state(store: WorkspaceStore, task_id: str) -> TaskState:
    files = await store.store_files(task_id, "a", [ExtractedFile("app/x.py", b"x = 1\n")])
    done = Subtask(id="a", description="a", agent_type="fullstack", status=SubtaskStatus.COMPLETED,
                   files=files, completed_at=datetime(2025, 1, 1, tzinfo=UTC))
    todo = Subtask(id="b", description="b", agent_type="fullstack", depends_on=["a"])
    return TaskState(id=task_id, description="task", status=TaskStatus.EXECUTING, subtasks=[done, todo])


REPLY = "Here:\n\n```python path=app/x.py\nx = 2\n```\n\n```python path=app/x.py/no.py\nx = 3\n```\n"


async def test_a_worktree_is_checked_out_only_when_the_expert_asks_for_it(nats_server, tmp_path):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await declare.ensure_topology(js)
        store = WorkspaceStore(lambda: js)
        workspace = Workspace(store, FileLimits(), tmp_path / "agent")
        state = await _state(store, "task-desk-1")

        # One reply, no tool: nothing is checked out, and the files are what a commit would keep.
        desk = await workspace.open(state, state.subtasks[1])
        assert desk.can_check_out and desk.contents
        delivered = await desk.deliver(REPLY, worked_in=["__pycache__"])
        await desk.close()
        assert [(f.path, f.written_by) for f in delivered.files] == [("app/x.py", "b")]
        assert [r.path for r in delivered.refused] == ["app/x.py/no.py"]
        assert list((tmp_path / "agent").iterdir()) == [], "no git for an expert that used no tool"

        # A tool's first call asks for the worktree: it holds the dependency's file, and what the
        # expert leaves there is delivered with the reply's files.
        desk = await workspace.open(state, state.subtasks[1])
        worktree = await desk.worktree()
        assert worktree is not None and (worktree.path / "app/x.py").read_bytes() == b"x = 1\n"
        assert await desk.worktree() is worktree, "one checkout per desk"
        (worktree.path / "tests").mkdir()
        (worktree.path / "tests/test_x.py").write_text("def test(): pass\n")
        delivered = await desk.deliver(REPLY, worked_in=["__pycache__"])
        await desk.close()
        assert sorted(f.path for f in delivered.files) == ["app/x.py", "tests/test_x.py"]
        assert [r.path for r in delivered.refused] == ["app/x.py/no.py"]
    finally:
        await nc.close()
