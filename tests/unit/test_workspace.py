"""Workspace bookkeeping without a broker: commit order, what a subtask sees, conflicts, the
prompt's file context, and the repository built from it (read back with the real git)."""

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aether_contracts.events import SubtaskFinished
from aether_contracts.state import Subtask, SubtaskStatus, TaskState, TaskStatus
from aether_contracts.workspace import RefusedFile, WorkspaceFile
from aether_core.files import FileLimits
from aether_core.gitrepo import TaskCheckouts, memory_history, subtask_commit
from aether_core.workspace import commit_order, detect_conflicts, final_files, visible_files
from aether_executor import scheduling
from aether_executor.workspace import files_context

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def wf(path: str, by: str, content: str = "") -> WorkspaceFile:
    import hashlib

    data = (content or f"{path} by {by}").encode()
    return WorkspaceFile(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), written_by=by, object=f"{by}/{path}")


def state_of(*specs: tuple[str, list[str], list[WorkspaceFile]]) -> TaskState:
    subtasks = [
        Subtask(id=i, description=f"do {i}", agent_type="fullstack", depends_on=deps, status=SubtaskStatus.COMPLETED, files=files, completed_at=T0 + timedelta(seconds=n))
        for n, (i, deps, files) in enumerate(specs)
    ]
    return TaskState(id="t", description="task", status=TaskStatus.EXECUTING, subtasks=subtasks)


def test_commit_order_puts_dependencies_first_and_keeps_plan_order_otherwise():
    state = state_of(("d", ["b", "c"], []), ("b", ["a"], []), ("a", [], []), ("c", ["a"], []))
    assert [s.id for s in commit_order(state)] == ["a", "b", "c", "d"]
    state.subtasks[3].status = SubtaskStatus.FAILED
    assert [s.id for s in commit_order(state)] == ["a", "b", "d"], "failed subtasks have no commit"


def test_a_subtask_sees_only_its_ancestors_files_last_writer_wins():
    state = state_of(
        ("a", [], [wf("x.py", "a"), wf("y.py", "a")]),
        ("b", ["a"], [wf("x.py", "b")]),
        ("c", [], [wf("z.py", "c")]),
        ("d", ["b"], []),
    )
    assert {p: f.written_by for p, f in visible_files(state, "d").items()} == {"x.py": "b", "y.py": "a"}
    assert visible_files(state, "a") == {}
    assert list(final_files(state)) == ["x.py", "y.py", "z.py"]


def test_conflicts_are_only_between_parallel_subtasks_with_different_content():
    state = state_of(
        ("a", [], [wf("x.py", "a")]),
        ("b", ["a"], [wf("x.py", "b")]),  # saw a's version: deliberate
        ("c", [], [wf("x.py", "c"), wf("same.py", "c", "same"), wf("dir", "c")]),
        ("e", [], [wf("same.py", "e", "same"), wf("dir/inner.py", "e")]),
    )
    found = {(c.path, c.kind): c.subtask_ids for c in detect_conflicts(state)}
    assert found == {("x.py", "content"): ["a", "b", "c"], ("dir", "file-directory"): ["c", "e"]}


def test_the_scheduler_records_files_refusals_and_new_conflicts_in_the_state_and_log():
    state = state_of(("a", [], [wf("x.py", "a")]))
    state.subtasks.append(Subtask(id="b", description="do b", agent_type="fullstack", status=SubtaskStatus.EXECUTING, dispatches=1))
    event = SubtaskFinished(
        task_id="t", subtask_id="b", outcome="completed", result="r", files=[wf("x.py", "b")],
        refused_files=[RefusedFile(path="../x", reason="contains '..'")],
    )
    scheduling.finish_subtask(state, event)
    b = state.subtask("b")
    assert [f.path for f in b.files] == ["x.py"] and b.refused_files[0].written_by == "b"
    assert [(c.path, c.subtask_ids) for c in state.conflicts] == [("x.py", ["a", "b"])]
    kinds = [e.kind for e in state.events]
    assert kinds.count("workspace.conflict") == 1 and "workspace.refused" in kinds and "workspace.files" in kinds


def test_the_prompt_context_is_bounded_and_marks_what_it_cuts():
    big = "line\n" * 5000
    state = state_of(
        ("a", [], [wf("big.txt", "a", big), wf("small.py", "a", "x = 1\n")]),
        ("b", [], [wf(f"f{n}.py", "b", "y\n" * 3000) for n in range(30)]),
        ("c", ["a", "b"], []),
    )
    contents = {f.object: f"{f.path} by {f.written_by}".encode() for s in state.subtasks for f in s.files}
    contents["a/big.txt"] = big.encode()
    contents["a/small.py"] = b"x = 1\n"
    for n in range(30):
        contents[f"b/f{n}.py"] = ("y\n" * 3000).encode()
    text = files_context(state, state.subtask("c"), contents, file_chars=1000, total_chars=8000)
    assert "### File big.txt (written by a, fullstack; 25000 bytes)" in text
    assert "[… truncated by Aether: 24000 more characters of big.txt" in text
    assert "### File f0.py (written by b" in text
    assert "Not shown (the prompt's budget of 8000 characters for files is spent):" in text
    assert "- f29.py (6000 bytes, written by b)" in text and "- small.py (6 bytes, written by a)" in text
    assert len(text) < 8000 + 4000


def test_worker_checkout_and_synthesizer_history_agree_and_git_reads_them(tmp_path):
    state = state_of(("a", [], [wf("app/x.py", "a")]), ("b", ["a"], [wf("app/y.py", "b")]))
    contents = {f.object: f"{f.path} by {f.written_by}".encode() for s in state.subtasks for f in s.files}
    history = memory_history()
    for subtask in commit_order(state):
        history.commit(subtask_commit(subtask, contents))
    checkouts = TaskCheckouts(tmp_path / "agent", keep_idle_s=0)
    worktree = checkouts.checkout("t", "c", [subtask_commit(s, contents) for s in commit_order(state)])
    try:
        assert worktree.base == history.head, "the same commits on every machine"
        assert (worktree.path / "app/x.py").read_text() == "app/x.py by a"
        changed, refused = worktree.commit({"app/x.py": b"app/x.py by a", "app/z.py": b"new", "app/y.py/no": b"x"}, "testing-expert", "c: tests")
        assert changed == {"app/z.py": b"new"}, "an unchanged file is not the subtask's"
        assert [r.path for r in refused] == ["app/y.py/no"]
        log = subprocess.run(["git", "log", "--format=%an %s"], cwd=worktree.path, capture_output=True, text=True, check=True).stdout
        assert log.splitlines() == ["testing-expert c: tests", "fullstack b: do b", "fullstack a: do a"]
    finally:
        worktree.close()
    assert list((tmp_path / "agent").iterdir()) == [], "the task's checkout goes with its last worktree"


def test_what_tools_left_in_a_worktree_is_the_work_not_its_git_link(tmp_path):
    checkouts = TaskCheckouts(tmp_path / "agent", keep_idle_s=0)
    worktree = checkouts.checkout("t", "a", [])
    try:
        assert (worktree.path / ".git").is_file(), "a worktree's .git is a file naming its repository"
        (worktree.path / "app").mkdir()
        (worktree.path / "app" / "main.py").write_text("print(1)\n")
        left, skipped = worktree.changes(FileLimits(), ["__pycache__"])
        assert left == {"app/main.py": b"print(1)\n"} and skipped == []
    finally:
        worktree.close()



def test_a_checkout_while_the_tasks_last_worktree_closes_is_not_removed_under_it(tmp_path, monkeypatch):
    """The last worktree of a task removes the task's checkout; a subtask of the same task that
    starts meanwhile (AETHER_WORKER_CONCURRENCY > 1) must get a checkout that survives. Seen in
    CI as KeyError(b'HEAD') / NotGitRepository and a subtask run twice. The removal is slowed
    down here so that the new checkout lands inside it every time."""
    import shutil
    import threading

    from aether_core import gitrepo

    real_rmtree = shutil.rmtree
    removing = threading.Event()

    def slow_rmtree(path, *args, **kwargs):
        if Path(path) == tmp_path / "agent" / "t":  # the task's checkout, not a worktree
            removing.set()
            time.sleep(0.3)
        return real_rmtree(path, *args, **kwargs)

    checkouts = TaskCheckouts(tmp_path / "agent", keep_idle_s=0)
    first = checkouts.checkout("t", "a", [])
    monkeypatch.setattr(gitrepo.shutil, "rmtree", slow_rmtree)
    closing = threading.Thread(target=first.close)
    closing.start()
    assert removing.wait(5)
    second = checkouts.checkout("t", "b", [])  # while the first one's checkout is being removed
    closing.join()
    try:
        changed, refused = second.commit({"app/b.py": b"b"}, "fullstack", "b")
        assert changed == {"app/b.py": b"b"} and refused == []
        assert (second.path / "app/b.py").read_bytes() == b"b"
    finally:
        second.close()
    assert list((tmp_path / "agent").iterdir()) == []


def test_the_agents_file_cache_keeps_the_most_recent_within_its_bytes():
    from aether_core.workspace_store import ContentCache

    cache = ContentCache(max_bytes=800)
    for n in range(8):
        cache.put(f"o{n}", bytes(100))
    cache.get("o0")  # used: kept over o1
    cache.put("o8", bytes(100))
    assert cache.get("o0") is not None and cache.get("o1") is None
    assert cache.size <= 800
    cache.put("huge", bytes(101))  # over an eighth of the budget: never cached
    assert cache.get("huge") is None


def test_a_tasks_repository_stays_for_its_next_subtask_and_goes_when_idle(tmp_path):
    state = state_of(("a", [], [wf("app/x.py", "a")]))
    contents = {f.object: f"{f.path} by {f.written_by}".encode() for s in state.subtasks for f in s.files}
    base = [subtask_commit(s, contents) for s in commit_order(state)]
    checkouts = TaskCheckouts(tmp_path / "agent", keep_idle_s=0.3, keep_idle_max=2)
    first = checkouts.checkout("t", "b", base)
    first.commit({"app/b.py": b"b"}, "fullstack", "b")
    first.close()
    assert (tmp_path / "agent" / "t" / "repo.git").is_dir(), "kept for the task's next subtask"
    assert not (tmp_path / "agent" / "t" / "b").exists(), "the worktree itself is gone"

    second = checkouts.checkout("t", "c", base)  # reuses the repository
    try:
        assert second.base == first.base, "the same commits, whether built anew or reused"
        assert (second.path / "app/x.py").read_text() == "app/x.py by a"
        assert not (second.path / "app/b.py").exists(), "a sibling's uncommitted-to-base work is not in it"
    finally:
        second.close()

    for other in ("u", "v", "w"):  # more idle repositories than keep_idle_max
        checkouts.checkout(other, "s", []).close()
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == ["v", "w"], "oldest idle ones removed first"
    time.sleep(0.35)
    checkouts.checkout("x", "s", []).close()  # any release prunes what has been idle too long
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == ["x"]


def test_a_reply_stored_without_a_worktree_keeps_and_refuses_what_a_commit_in_one_would(tmp_path):
    """An expert that answers in one reply gets no worktree (`Desk`): its files are checked
    against its dependencies' by `changed_files`, which must agree with a real commit."""
    from aether_core.files import ExtractedFile
    from aether_executor.workspace import changed_files

    state = state_of(("a", [], [wf("app/x.py", "a"), wf("docs/guide.md", "a")]), ("b", ["a"], []))
    contents = {f.object: f"{f.path} by {f.written_by}".encode() for s in state.subtasks for f in s.files}
    reply = {
        "app/x.py": b"app/x.py by a",  # unchanged: not the subtask's
        "app/new.py": b"new",
        "app/x.py/inner.py": b"a file where a directory is needed",
        "docs": b"a file where a directory is",
        "notes": b"first a file",
        "notes/later.md": b"then a directory at the same place",
        "docs/guide.md": b"changed",
    }
    kept, refused = changed_files(visible_files(state, "b"), [ExtractedFile(p, c) for p, c in reply.items()])
    checkouts = TaskCheckouts(tmp_path / "agent", keep_idle_s=0)
    worktree = checkouts.checkout("t", "b", [subtask_commit(s, contents) for s in commit_order(state) if s.id == "a"])
    try:
        changed, skipped = worktree.commit(reply, "fullstack", "b")
    finally:
        worktree.close()
    assert {f.path: f.content for f in kept} == changed == {"app/new.py": b"new", "notes": b"first a file", "docs/guide.md": b"changed"}
    assert sorted(r.path for r in refused) == sorted(s.path for s in skipped) == ["app/x.py/inner.py", "docs", "notes/later.md"]
    assert all(r.reason for r in refused)
