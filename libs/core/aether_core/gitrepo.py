"""Git histories built from workspace files, with dulwich (pure Python: the service images need
no git binary, and read-only containers need no disk for the synthesizer's in-memory repository).

`History` adds one commit per set of files onto a repository's object store; the same inputs give
the same commit ids on every machine (times come from the task state), so an agent's checkout of
its dependencies and the synthesizer's repository agree. Paths reaching here were checked by
`aether_core.files.check_path`; every blob is a regular file (mode 100644): no links, no
executables, no submodules.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from aether_contracts.state import Subtask

from .files import FileLimits, UnsafePath, check_path, write_inside

if TYPE_CHECKING:
    from dulwich.object_store import BaseObjectStore
    from dulwich.objects import Commit, ObjectID
    from dulwich.repo import BaseRepo, Repo

# dulwich is imported where it is used: an agent's cold start (which a task's deadline counts)
# does not pay for it before its first subtask.

FILE_MODE = 0o100644
DIR_MODE = 0o040000
COMMITTER = "Aether <aether@aether.invalid>"


def identity(name: str) -> bytes:
    """`<agent type> <agent-type@agents.aether.invalid>` (a reserved domain: nobody's address)."""
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "agent"
    return f"{name.replace('<', '').replace('>', '')} <{clean}@agents.aether.invalid>".encode()


@dataclass
class CommitSpec:
    author: str
    message: str
    files: dict[str, bytes]
    when: datetime


def commit_message(subtask: Subtask) -> str:
    first = " ".join(subtask.description.split())
    subject = f"{subtask.id}: {first}"
    if len(subject) > 72:
        subject = subject[:71] + "…"
    trailers = [f"Aether-Subtask: {subtask.id}", f"Aether-Agent-Type: {subtask.agent_type}"]
    if subtask.agent_id:
        trailers.append(f"Aether-Agent: {subtask.agent_id}")
    return f"{subject}\n\n{subtask.description.strip()}\n\n" + "\n".join(trailers)


def subtask_commit(subtask: Subtask, contents: dict[str, bytes]) -> CommitSpec:
    """A completed subtask's commit: author = its agent type, message = the subtask, its files
    (contents by object name), dated when it completed (the same on every machine)."""
    return CommitSpec(
        author=subtask.agent_type,
        message=commit_message(subtask),
        files={f.path: contents[f.object] for f in subtask.files},
        when=subtask.completed_at or subtask.started_at or datetime(2000, 1, 1, tzinfo=UTC),
    )


@dataclass
class Skipped:
    path: str
    reason: str


def parent_dirs(path: str) -> list[str]:
    """The directories on the way to `path`: `a/b/c` -> `a`, `a/b`."""
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def path_clash(path: str, files: Container[str], directories: Container[str]) -> str | None:
    """Why `path` cannot be added beside `files` (and the `directories` they make), or None."""
    for prefix in parent_dirs(path):
        if prefix in files:
            return f"an earlier commit has a file at {prefix!r}, where this path needs a directory"
    if path in directories:
        return f"an earlier commit has a directory at {path!r}"
    return None


@dataclass
class History:
    """Commits on top of `parent` in `repo`'s object store; `tree` is the flat view at `head`."""

    repo: BaseRepo
    head: ObjectID | None = None
    tree: dict[str, ObjectID] = field(default_factory=dict)
    """Path -> blob id."""
    sizes: dict[str, int] = field(default_factory=dict)
    commits: list[tuple[ObjectID, str]] = field(default_factory=list)
    directories: set[str] = field(default_factory=set)

    def commit(self, spec: CommitSpec) -> list[Skipped]:
        from dulwich.objects import Blob, Commit

        skipped = []
        for path, content in sorted(spec.files.items()):
            path = check_path(path)
            clash = path_clash(path, self.tree, self.directories)
            if clash:
                skipped.append(Skipped(path, clash))
                continue
            blob = Blob.from_string(content)
            self.repo.object_store.add_object(blob)
            self.tree[path] = blob.id
            self.sizes[path] = len(content)
            self.directories.update(parent_dirs(path))
        commit = Commit()
        commit.tree = self._write_tree()
        commit.parents = [self.head] if self.head else []
        commit.author = identity(spec.author)
        commit.committer = COMMITTER.encode()
        stamp = int(spec.when.timestamp())
        commit.author_time = commit.commit_time = stamp
        commit.author_timezone = commit.commit_timezone = 0
        commit.encoding = b"UTF-8"
        commit.message = spec.message.rstrip("\n").encode() + b"\n"
        self.repo.object_store.add_object(commit)
        self.head = commit.id
        self.commits.append((commit.id, spec.message.splitlines()[0] if spec.message else ""))
        return skipped

    def _write_tree(self) -> ObjectID:
        from dulwich.objects import Tree

        root: dict = {}
        for path, blob in self.tree.items():
            node = root
            *dirs, name = path.split("/")
            for part in dirs:
                node = node.setdefault(part, {})
            node[name] = blob

        def build(node: dict) -> ObjectID:
            tree = Tree()
            for name, value in node.items():
                if isinstance(value, dict):
                    tree.add(name.encode(), DIR_MODE, build(value))
                else:
                    tree.add(name.encode(), FILE_MODE, value)
            self.repo.object_store.add_object(tree)
            return tree.id

        return build(root)

    def point(self, branch: str = "main") -> None:
        from dulwich.refs import Ref

        assert self.head is not None
        self.repo.refs[Ref(f"refs/heads/{branch}".encode())] = self.head
        self.repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(f"refs/heads/{branch}".encode()))

    def bundle(self, branch: str = "main") -> bytes:
        """A git bundle of the branch (and HEAD), as `git clone <file>` accepts it."""
        from dulwich.bundle import create_bundle_from_repo, write_bundle
        from dulwich.refs import Ref

        self.point(branch)
        bundle = create_bundle_from_repo(self.repo, refs=[Ref(f"refs/heads/{branch}".encode()), Ref(b"HEAD")])
        out = io.BytesIO()
        try:
            write_bundle(out, bundle)
        finally:
            bundle.close()
        return out.getvalue()

    def archive(self, prefix: str, when: datetime) -> bytes:
        """The files at `head` as a reproducible `.tar.gz` under `prefix/` (like `git archive`)."""
        raw = io.BytesIO()
        stamp = int(when.timestamp())
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs = sorted({"/".join(p.split("/")[:n]) for p in self.tree for n in range(1, p.count("/") + 1)})
            for directory in dirs:
                info = tarfile.TarInfo(f"{prefix}/{directory}")
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, stamp
                tar.addfile(info)
            for path in sorted(self.tree):
                data = self.repo.object_store[self.tree[path]].as_raw_string()
                info = tarfile.TarInfo(f"{prefix}/{path}")
                info.size, info.mode, info.mtime = len(data), 0o644, stamp
                tar.addfile(info, io.BytesIO(data))
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=stamp) as gz:
            gz.write(raw.getvalue())
        return out.getvalue()


def _commit(store: BaseObjectStore, sha: ObjectID) -> Commit:
    """The commit `sha` in `store` (whose lookup is typed as any object, ShaFile)."""
    return cast("Commit", store[sha])


def memory_history() -> History:
    from dulwich.repo import MemoryRepo

    return History(MemoryRepo())


class TaskCheckouts:
    """An agent's working directories: per task a bare repository holding the dependencies'
    commits, and per running subtask a git worktree of it.

    Everything lives under `root` (on a container's /tmp), owned by this process alone: the
    Object Store is the source of truth, a checkout is only where the agent works. A task's
    repository outlives its last worktree here by `keep_idle_s` (at most `keep_idle_max` idle
    ones, oldest removed first), because the task's next subtask often comes to the same agent:
    it then only adds the commits it lacks instead of building the repository again.
    """

    def __init__(self, root: Path, *, keep_idle_s: float = 30.0, keep_idle_max: int = 32) -> None:
        self.root = root
        self.keep_idle_s = keep_idle_s
        self.keep_idle_max = keep_idle_max
        self._users: dict[str, int] = {}
        self._idle: dict[str, float] = {}
        """Task key -> when its last worktree here closed (time.monotonic)."""
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        if root.exists():
            shutil.rmtree(root)  # a previous run of this agent crashed: nothing in it is needed
        root.mkdir(parents=True, mode=0o700)

    @staticmethod
    def dirname(value: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in value)[:80]
        return safe or "_"

    def checkout(self, task_id: str, name: str, base: Iterable[CommitSpec]) -> Worktree:
        """A worktree at the commit of `base` (the dependencies' files), for one subtask run."""
        from dulwich.repo import Repo
        from dulwich.worktree import add_worktree

        key = self.dirname(task_id)
        with self._guard:
            self._users[key] = self._users.get(key, 0) + 1
            self._idle.pop(key, None)
            lock = self._locks.setdefault(key, threading.Lock())
        try:
            with lock:
                task_dir = self.root / key
                bare = task_dir / "repo.git"
                if bare.exists():
                    repo = Repo(str(bare))
                else:
                    task_dir.mkdir(parents=True, exist_ok=True)
                    repo = Repo.init_bare(str(bare), mkdir=True)
                    config = repo.get_config()
                    config.set((b"gc",), b"auto", b"0")  # short-lived: never worth collecting
                    config.write_to_path()
                history = History(repo)
                for spec in base:
                    history.commit(spec)
                if history.head is None:
                    history.commit(CommitSpec("aether", "Empty workspace", {}, datetime(2000, 1, 1, tzinfo=UTC)))
                assert history.head is not None  # set by the commit above at the latest
                history.point("main")
                path = task_dir / self.dirname(name)
                suffix = 1
                while path.exists():
                    suffix += 1
                    path = task_dir / f"{self.dirname(name)}-{suffix}"
                add_worktree(repo, str(path), commit=history.head)
                return Worktree(self, key, repo, path, history.head)
        except BaseException:
            self._release(key)
            raise

    def _release(self, key: str) -> None:
        with self._guard:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                self._idle[key] = time.monotonic()
            self._prune()

    def _prune(self) -> None:
        """Remove the idle repositories past their time or their number. Under the guard: a
        checkout of the same task starting meanwhile waits, then builds a new one, instead of
        opening the one being removed."""
        now = time.monotonic()
        oldest_first = sorted(self._idle.items(), key=lambda item: item[1])
        excess = len(oldest_first) - self.keep_idle_max
        for n, (key, since) in enumerate(oldest_first):
            if n < excess or now - since >= self.keep_idle_s:
                del self._idle[key]
                self._locks.pop(key, None)
                shutil.rmtree(self.root / key, ignore_errors=True)


@dataclass
class Worktree:
    owner: TaskCheckouts
    key: str
    repo: Repo
    path: Path
    base: ObjectID
    closed: bool = False

    def commit(self, files: dict[str, bytes], author: str, message: str) -> tuple[dict[str, bytes], list[Skipped]]:
        """Write the files into the worktree and commit them; return what the commit changed."""
        from dulwich.diff_tree import tree_changes
        from dulwich.repo import Repo

        refused: list[Skipped] = []
        written = []
        for path, content in files.items():
            try:
                write_inside(str(self.path), path, content)
                written.append(path)
            except (ValueError, OSError) as exc:
                refused.append(Skipped(path, str(exc)))
        worktree = Repo(str(self.path))
        worktree.hooks.clear()  # a scratch checkout: no hooks (dulwich spawns a process per hook)
        try:
            work = worktree.get_worktree()
            if written:
                work.stage([p.encode() for p in written])
            head = work.commit(
                message=message.encode() or b"(no message)",
                author=identity(author),
                committer=COMMITTER.encode(),
                no_verify=True,
            )
            store = worktree.object_store
            old, new = _commit(store, self.base).tree, _commit(store, head).tree
            changed = {}
            for change in tree_changes(store, old, new):
                if change.new is not None and change.new.path is not None and change.new.sha is not None:
                    changed[change.new.path.decode()] = store[change.new.sha].as_raw_string()
        finally:
            worktree.close()
        return changed, refused

    def changes(self, limits: FileLimits, skip_dirs: Iterable[str] = ()) -> tuple[dict[str, bytes], list[Skipped]]:
        """What the expert's tools and commands left in the worktree that its base lacks: new and
        changed regular files (links, devices and anything under `skip_dirs` are not files of the
        work; a path the rules refuse, a binary or an oversized file is skipped with its reason).
        Deleted files are not carried (a subtask adds and changes files)."""
        from dulwich.objects import Blob
        from dulwich.repo import Repo

        skipped: list[Skipped] = []
        found: dict[str, bytes] = {}
        total = 0
        skip = set(skip_dirs) | {".git"}
        repo = Repo(str(self.path))
        try:
            store = repo.object_store
            base = {}
            tree = store[_commit(store, self.base).tree]
            for entry in store.iter_tree_contents(tree.id):
                base[entry.path.decode()] = entry.sha
        finally:
            repo.close()
        for directory, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if d not in skip and not os.path.islink(os.path.join(directory, d)))
            for name in sorted(files):
                if name == ".git":
                    continue  # a worktree's link to its repository (a file), no part of the work
                full = os.path.join(directory, name)
                relative = os.path.relpath(full, self.path).replace(os.sep, "/")
                if relative == ".git":
                    continue  # the worktree's pointer to its repository, not a file of the work
                info = os.lstat(full)
                if not stat.S_ISREG(info.st_mode):
                    skipped.append(Skipped(relative, "not a regular file (links and devices are not kept)"))
                    continue
                try:
                    path = check_path(relative)
                except UnsafePath as exc:
                    skipped.append(Skipped(relative, str(exc)))
                    continue
                if info.st_size > limits.max_file_bytes:
                    skipped.append(Skipped(path, f"{info.st_size} bytes; a file may have at most {limits.max_file_bytes}"))
                    continue
                with open(full, "rb") as handle:
                    content = handle.read(limits.max_file_bytes + 1)
                if base.get(path) == Blob.from_string(content).id:
                    continue
                if b"\x00" in content:
                    skipped.append(Skipped(path, "binary content (only text files are kept)"))
                    continue
                if len(found) >= limits.max_files or total + len(content) > limits.max_total_bytes:
                    skipped.append(Skipped(path, "over the limit of files or bytes one subtask may write"))
                    continue
                found[path] = content
                total += len(content)
        return found, skipped

    def close(self) -> None:
        from dulwich.worktree import remove_worktree

        if self.closed:
            return
        self.closed = True
        try:
            with self.owner._locks.get(self.key, threading.Lock()):
                remove_worktree(self.repo, str(self.path), force=True)
        except Exception:
            shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self.repo.close()
            self.owner._release(self.key)


def is_writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False
