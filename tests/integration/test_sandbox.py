"""The sandbox of `run_command` holds: each test tries to escape it, against the real bubblewrap.

They fail, not skip, when bubblewrap cannot run here, except on a machine whose kernel refuses
the namespaces it needs (then `detect` must say so, and in CI they fail all the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aether_core.sandbox import CommandSlots, SandboxLimits, SandboxUnavailable, detect

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = [Path(sys.prefix), Path(sys.base_prefix)]
QUICK = SandboxLimits(timeout_s=20)
_FIRST_UID = 1_990_100_000 + os.getpid() % 10_000 * 16
UIDS = range(_FIRST_UID, _FIRST_UID + 16)
"""A pool of this test run's own, so that "no process of the pool is left" ignores other runs'."""
_S = 200_000 + os.getpid() % 10_000 * 10
"""Sleeps of this process's own (`sleep {_S + n}`): tests on other xdist workers run the same
commands at the same time, and "no such process is left" must not see theirs."""


def _detect(lend: str = "auto"):
    found = detect(kind="bubblewrap", toolchain=TOOLCHAIN, uids=UIDS, lend=lend)
    if not found.available:
        refused = re.search(r"namespace|Operation not permitted", found.reason)
        if refused and not os.environ.get("CI"):
            pytest.skip(f"this kernel refuses the sandbox's namespaces: {found.reason}")
        pytest.fail(f"bubblewrap cannot run here: {found.reason}")
    return found


@pytest.fixture(scope="module")
def sandbox():
    return _detect()


@pytest.fixture(scope="module", params=["idmap", "chown"])
def lending(request):
    """As root the worktree is lent to the run's uid: by an idmapped mount, or by chown where the
    kernel or the filesystem cannot; both must hold the same guarantees."""
    if os.geteuid() != 0:
        pytest.skip("only root lends the worktree to another uid")
    return _detect(request.param)


@pytest.fixture
def reachable(tmp_path):
    """A worktree other users could reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="aether-sandbox-reachable-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def workspace(tmp_path):
    path = tmp_path / "worktree"
    path.mkdir()
    (path / "app.py").write_text("print('hello')\n")
    return path


def sh(command: str) -> str:
    return subprocess.run(command, shell=True, capture_output=True, text=True).stdout


def pool_tasks() -> list[str]:
    """Processes on the host whose real uid is one of the sandbox pool's."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
        if uid in UIDS:
            found.append(name)
    return found


def host_processes(pattern: str) -> list[str]:
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if re.search(pattern, cmdline):
            found.append(cmdline)
    return found


async def test_the_hosts_loopback_services_are_out_of_reach(sandbox, workspace):
    listener = socket.create_server(("0.0.0.0", 0))
    port = listener.getsockname()[1]
    listener.settimeout(0.5)
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()  # it does answer on the host
        listener.accept()[0].close()
        hosts = ["127.0.0.1", *sh("hostname -I").split()]
        for host in hosts:
            connect = f"python3 -c \"import socket; socket.create_connection(('{host}', {port}), 2)\""
            result = await sandbox.run(connect, workspace, QUICK)
            assert result.exit_code != 0, (host, result)
            assert re.search(r"Connection refused|Network is unreachable|timed out", result.output), result.output
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever reached it
    finally:
        listener.close()


async def test_no_dns_no_route_out_only_its_own_loopback(sandbox, workspace):
    result = await sandbox.run(
        "python3 -c \"import socket; socket.getaddrinfo('pypi.org', 443)\"; echo dns=$?; "
        "cat /proc/net/route; echo; tail -n +3 /proc/net/dev | cut -d: -f1",
        workspace,
        QUICK,
    )
    assert "dns=1" in result.output, result.output
    assert re.search(r"Temporary failure in name resolution|Name or service not known", result.output)
    lines = result.output.strip().splitlines()
    assert lines[-1].strip() == "lo", result.output  # the only interface
    assert not any(re.match(r"^\S+\s+[0-9A-F]{8}\s", line) for line in lines), "a route exists"
    assert not (await sandbox.run("test -S /run/docker.sock || test -e /var/run/docker.sock", workspace, QUICK)).exit_code == 0


async def test_only_the_workspace_is_writable(lending, workspace):
    sandbox = lending
    for target in ["/usr/x", "/etc/x", "/x", "/workspace/../x", "/root/x", "/proc/x", "/dev/x"]:
        result = await sandbox.run(f"touch {target}", workspace, QUICK)
        assert result.exit_code != 0, (target, result)
    assert not (workspace.parent / "x").exists()
    result = await sandbox.run("pwd; mkdir -p out/deep && echo made > out/deep/file && cat app.py", workspace, QUICK)
    assert result.exit_code == 0, result
    assert result.output == "/workspace\nhello\n" or result.output.startswith("/workspace\nprint('hello')")
    assert (workspace / "out/deep/file").read_text() == "made\n"
    me = (os.geteuid(), os.getegid())
    for path in [workspace, *workspace.rglob("*")]:
        assert (path.lstat().st_uid, path.lstat().st_gid) == me, path  # ownership given back
    tmp = await sandbox.run("echo scratch > /tmp/t && cat /tmp/t && ls -ld /tmp | cut -c1-10", workspace, QUICK)
    assert tmp.output == "scratch\ndrwxrwxrwt\n", tmp


async def test_files_outside_the_mounts_are_invisible(sandbox, workspace):
    secret_dir = Path(tempfile.mkdtemp(dir=Path.home(), prefix="aether-sandbox-secret-"))
    try:
        secret = secret_dir / "api_key"
        secret.write_text("sk-do-not-leak\n")
        secret.chmod(0o644)
        secret_dir.chmod(0o755)
        result = await sandbox.run(f"cat {secret}; ls {secret_dir}; ls -a {Path.home()}", workspace, QUICK)
        assert "sk-do-not-leak" not in result.output
        assert "No such file or directory" in result.output, result.output
        checkout = await sandbox.run(f"ls -a {ROOT}; test -e {ROOT}/README.md", workspace, QUICK)
        assert checkout.exit_code != 0  # the toolchain's .venv is there, nothing else of the checkout
        assert "README.md" not in checkout.output and "libs" not in checkout.output, checkout.output
        for hidden in ["/home", "/run", "/var/lib", "/srv", "/mnt", "/opt", "/sys/kernel", str(ROOT / ".aether")]:
            assert (await sandbox.run(f"ls {hidden}", workspace, QUICK)).exit_code != 0, hidden
    finally:
        shutil.rmtree(secret_dir)


async def test_nothing_of_the_agents_environment(sandbox, workspace, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-from-the-agent")
    result = await sandbox.run(
        f"env; cat /proc/1/environ; echo; cat /proc/{os.getpid()}/environ; ls -d /proc/[0-9]*",
        workspace,
        QUICK,
    )
    assert "sk-test-secret" not in result.output
    env = dict(line.split("=", 1) for line in result.output.splitlines() if re.match(r"^[A-Z_]+=", line))
    assert set(env) == {"PATH", "HOME", "LANG", "TMPDIR", "PWD"}, env
    assert env["PATH"].startswith(f"{sys.prefix}/bin:"), env["PATH"]
    pids = [int(p.removeprefix("/proc/")) for p in re.findall(r"^/proc/\d+$", result.output, re.M)]
    assert os.getpid() not in pids and max(pids) < 100, pids  # a PID namespace of its own


async def test_no_privilege_is_left(sandbox, workspace):
    result = await sandbox.run("grep -E '^(Cap|NoNewPrivs|Groups)' /proc/self/status; cat /etc/shadow", workspace, QUICK)
    status = dict(re.findall(r"^(\w+):\s*(\S*)$", result.output, re.M))
    assert {status[f"Cap{kind}"] for kind in ("Inh", "Prm", "Eff", "Bnd", "Amb")} == {"0000000000000000"}, status
    assert status["NoNewPrivs"] == "1" and status["Groups"] in ("", str(os.getgid())), status
    assert "Permission denied" in result.output and "root:" not in result.output


async def test_the_exit_code_is_the_commands_and_a_signal_is_named(sandbox, workspace):
    assert (await sandbox.run("exit 3", workspace, QUICK)).exit_code == 3
    ok = await sandbox.run("echo out; echo err >&2", workspace, QUICK)
    assert (ok.exit_code, ok.output, ok.killed_by, ok.timed_out) == (0, "out\nerr\n", None, False)
    killed = await sandbox.run("kill -TERM $$", workspace, QUICK)
    assert (killed.exit_code, killed.killed_by) == (143, "SIGTERM")


async def test_the_timeout_kills_the_whole_tree(sandbox, workspace):
    started = time.monotonic()
    result = await sandbox.run(
        f"sleep {_S + 1} & setsid sh -c 'sleep {_S + 2} & sleep {_S + 3}' & echo started; sleep {_S + 4}",
        workspace,
        SandboxLimits(timeout_s=1),
    )
    assert time.monotonic() - started < 5
    assert (result.timed_out, result.exit_code, result.killed_by) == (True, None, "timeout")
    assert result.output == "started\n"
    assert host_processes(rf"sleep {_S // 10}[1-4]\b") == []
    assert pool_tasks() == []


async def test_nothing_it_started_outlives_a_normal_exit(sandbox, workspace):
    result = await sandbox.run(f"nohup setsid sleep {_S + 6} >/dev/null 2>&1 & echo bye", workspace, QUICK)
    assert (result.exit_code, result.output, result.timed_out) == (0, "bye\n", False)
    assert result.duration_s < 5 and host_processes(rf"sleep {_S + 6}\b") == [] and pool_tasks() == []


async def test_a_fork_bomb_is_contained_and_the_host_stays_responsive(sandbox, workspace):
    limits = SandboxLimits(timeout_s=5, processes=64)
    bomb = asyncio.create_task(sandbox.run("bomb() { bomb | bomb & }; bomb; sleep 30", workspace, limits))
    await asyncio.sleep(1)
    for _ in range(3):
        started = time.monotonic()
        plain = await asyncio.create_subprocess_exec("sh", "-c", "true")
        assert await plain.wait() == 0 and time.monotonic() - started < 2.0
    result = await bomb
    assert result.timed_out or result.exit_code != 0
    assert pool_tasks() == []
    forks = await sandbox.run("python3 -c 'import os\nwhile True: os.fork()'", workspace, limits)
    assert forks.exit_code != 0 and "BlockingIOError" in forks.output
    assert pool_tasks() == []


async def test_the_process_limit_is_the_one_asked_for(sandbox, workspace):
    count = (
        "import os, time\nn = 0\nfor _ in range(100):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n"
        "    n += 1\nprint(n)"
    )
    result = await sandbox.run(f"exec python3 -c '{count}'", workspace, SandboxLimits(timeout_s=20, processes=12))
    assert result.exit_code == 0, result
    assert 8 <= int(result.output) <= 11, result.output  # python itself is one of the 12


async def test_concurrent_runs_each_have_their_own_uid(sandbox, tmp_path):
    spaces = [tmp_path / f"w{n}" for n in range(3)]
    for space in spaces:
        space.mkdir()
    results = await asyncio.gather(*(sandbox.run("id -u; sleep 0.5", space, QUICK) for space in spaces))
    uids = {int(result.output) for result in results}
    assert len(uids) == 3 and (uids <= set(UIDS) or os.geteuid() != 0), uids


async def test_memory_is_limited(sandbox, workspace):
    limits = SandboxLimits(timeout_s=20, memory_bytes=512 << 20)
    big = await sandbox.run("python3 -c 'b = bytearray(2 << 30)'", workspace, limits)
    assert big.exit_code != 0 and "MemoryError" in big.output, big
    small = await sandbox.run("python3 -c 'b = bytearray(64 << 20); print(len(b))'", workspace, limits)
    assert small.exit_code == 0 and small.output == f"{64 << 20}\n", small


async def test_cpu_time_is_limited(sandbox, workspace):
    result = await sandbox.run("python3 -c 'while True: pass'", workspace, SandboxLimits(timeout_s=30, cpu_s=1))
    assert (result.timed_out, result.killed_by) == (False, "cpu"), result
    assert result.duration_s < 10


async def test_file_size_is_limited(sandbox, workspace):
    limits = SandboxLimits(timeout_s=20, file_bytes=1 << 20)
    result = await sandbox.run("head -c 2000000 /dev/zero > big", workspace, limits)
    assert (result.exit_code, result.killed_by) == (153, "file_size"), result
    assert (workspace / "big").stat().st_size == 1 << 20


def _peak_rss_reset() -> int:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS
    return _status_kib("VmRSS")


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


async def test_100_mb_of_output_is_drained_in_bounded_memory(sandbox, workspace):
    before = _peak_rss_reset()
    result = await sandbox.run("yes | head -c 100000000", workspace, SandboxLimits(timeout_s=60))
    grown_kib = _status_kib("VmHWM") - before
    assert result.exit_code == 0 and result.output_bytes == 100_000_000, result.output_bytes
    assert grown_kib < 8 * 1024, f"the agent grew by {grown_kib} KiB"
    kept = 64 << 10
    head, marker, tail = result.output.partition(f"\n[… {100_000_000 - kept} bytes cut …]\n")
    assert marker and len(head) == len(tail) == kept // 2 and set(head + tail) == {"y", "\n"}


async def test_the_toolchain_runs_pytest(sandbox, workspace):
    (workspace / "test_it.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    result = await sandbox.run("python3 -m pytest -q -p no:cacheprovider test_it.py", workspace, QUICK)
    assert result.exit_code == 0 and "1 passed" in result.output, result.output


async def test_no_setuid_file_survives_where_others_could_run_it(lending, reachable):
    result = await lending.run("cp /bin/true t && chmod 6755 t && ls -l t | cut -c1-10", reachable, QUICK)
    assert result.output == "-rwsr-sr-x\n", result  # inside: nosuid, no new privileges
    st = (reachable / "t").stat()
    assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID) and st.st_uid == os.geteuid(), oct(st.st_mode)


async def test_chown_lending_leaves_hard_links_to_outside_files_alone(tmp_path, workspace):
    sandbox = _detect("chown")
    outside = tmp_path / "outside.txt"
    outside.write_text("original\n")
    os.link(outside, workspace / "linked.txt")
    result = await sandbox.run("echo changed >> linked.txt", workspace, QUICK)
    assert result.exit_code != 0 and "Permission denied" in result.output
    assert outside.read_text() == "original\n" and outside.stat().st_uid == os.geteuid()


async def test_the_idmapped_worktree_is_lent_without_a_chown(workspace):
    sandbox = _detect("idmap")
    (workspace / "untouched.txt").write_text("x\n")
    ctime = (workspace / "untouched.txt").stat().st_ctime_ns  # a chown would change it
    result = await sandbox.run("ls -n app.py | cut -d' ' -f3; echo more >> app.py; echo new > new.txt", workspace, QUICK)
    assert int(result.output) in UIDS, result  # inside, the run's uid owns the worktree
    assert (workspace / "untouched.txt").stat().st_ctime_ns == ctime
    assert {(workspace / name).stat().st_uid for name in ("app.py", "new.txt")} == {os.geteuid()}
    assert (workspace / "app.py").read_text() == "print('hello')\nmore\n"
    # Detached after. Its mount is named by its uid: other processes' sandboxes (tests running
    # beside this one) may hold mounts of their own, under other uids.
    assert f"aether-sandbox/mnt/{int(result.output)} " not in Path("/proc/self/mountinfo").read_text()


async def test_a_cancelled_run_leaves_nothing_behind(lending, workspace):
    run = asyncio.create_task(lending.run(f"touch made; sleep {_S + 5}", workspace, QUICK))
    await asyncio.sleep(1)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert host_processes(rf"sleep {_S + 5}\b") == [] and pool_tasks() == []
    assert (workspace / "made").stat().st_uid == os.geteuid()


async def test_a_run_cancelled_while_it_starts_leaves_nothing_behind(lending, workspace):
    """Cancels at moments across the start (lending the worktree, bubblewrap's start, its child's
    set-up): whichever step it lands in, nothing outlives the call."""
    for delay in (0, 0.005, 0.02, 0.05, 0.1, 0.2):
        run = asyncio.create_task(lending.run(f"sleep {_S + 7}", workspace, QUICK))
        await asyncio.sleep(delay)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        assert host_processes(rf"sleep {_S + 7}\b") == [] and pool_tasks() == [], delay
        assert workspace.stat().st_uid == os.geteuid(), delay


async def test_off_and_unavailable_never_run(workspace):
    off = detect(kind="off")
    assert (off.available, off.reason) == (False, "sandboxing is off")
    with pytest.raises(SandboxUnavailable, match="sandboxing is off"):
        await off.run("touch should-not-exist", workspace, QUICK)
    assert not (workspace / "should-not-exist").exists()


def test_detect_says_why_when_namespaces_are_refused():
    """As in a Docker container with its default profile: no CAP_SYS_ADMIN, no namespaces."""
    if os.geteuid() != 0:
        pytest.skip("drops a capability of root's")
    probe = "from aether_core.sandbox import detect; s = detect(); print(s.available, s.name, s.reason)"
    done = subprocess.run(
        ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.startswith("False unavailable bubblewrap cannot start a sandbox here: bwrap: "), done
    assert "Operation not permitted" in done.stdout


def test_without_root_it_runs_in_a_user_namespace():
    """An agent that is not root: its own uid, a user namespace, the process limit on top of its own."""
    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root to become another user, and the system's python3")
    with tempfile.TemporaryDirectory(prefix="aether-sandbox-user-") as where:
        _as_another_user(Path(where))


def _as_another_user(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(ROOT / "libs/core/aether_core/sandbox.py", code / "sandbox.py")
    space = tmp_path / "space"
    space.mkdir()
    os.chown(space, 4242, 4242)
    for path in (tmp_path, code, code / "sandbox.py"):
        path.chmod(0o755)
    script = (
        "import asyncio, sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path\n"
        "from sandbox import detect, SandboxLimits\n"
        "s = detect(); print(s.available, s.reason)\n"
        "async def main():\n"
        "    for c in ['id -u; cat /proc/1/environ; env | grep -c SECRET', 'unshare -U true', "
        "'python3 -c \"import socket; socket.create_connection((\\'127.0.0.1\\', 22), 1)\"', "
        "'for i in $(seq 40); do sleep 2 & done']:\n"
        "        r = await s.run(c, Path(sys.argv[2]), SandboxLimits(timeout_s=10, processes=10))\n"
        "        print(repr(r.exit_code), repr(r.output))\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups", "--", "/usr/bin/python3", "-c", script, str(code), str(space)],
        env={"PATH": "/usr/bin:/bin", "SECRET": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "True ", done
    assert lines[1] == "1 '4242\\n0\\n'", lines  # its own uid; an empty /proc/1/environ; no SECRET
    assert lines[2].startswith("1 ") and "unshare failed" in lines[2]  # no nested user namespace
    assert lines[3].startswith("1 ") and "Connection refused" in lines[3]
    assert lines[4].startswith("2 ") and "Cannot fork" in lines[4]
    # Zombies aside: bubblewrap's init, once exited, is the host init's to reap.
    assert [state for state in sh("ps -u 4242 -o stat=").split() if not state.startswith("Z")] == []


async def test_commands_beyond_the_hosts_slots_wait_their_turn_and_waiting_costs_no_time(tmp_path, workspace):
    """Two agents' sandboxes sharing the slots' directory, one slot: their commands never overlap
    (issue 14: what the machine runs at once is bounded apart from the subtasks agents hold), and
    the second one's time limit starts when it runs (4 s waited + 4 s run > its 7 s)."""
    first, second = _detect(), _detect()
    first.slots, second.slots = CommandSlots(1, tmp_path), CommandSlots(1, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    command = "date +%s.%N > start; sleep 4; date +%s.%N > end"
    limits = SandboxLimits(timeout_s=7)
    results = await asyncio.gather(first.run(command, workspace, limits), second.run(command, other, limits))
    assert [(r.exit_code, r.timed_out) for r in results] == [(0, False), (0, False)], results
    spans = sorted((float((w / "start").read_text()), float((w / "end").read_text())) for w in (workspace, other))
    assert spans[0][1] <= spans[1][0], spans


async def test_a_slot_freed_here_goes_at_once_to_a_waiter_here_not_at_its_next_poll(tmp_path):
    """Within one agent, a finished command hands its slot to the longest waiter at once: with
    polls 30 s apart, only that hand-over lets the holders of one slot finish within 10 s, in
    the order they came; a waiter cancelled while it waits takes no slot and blocks nobody."""
    slots = CommandSlots(1, tmp_path, max_poll_s=30)
    order: list[int] = []
    release = asyncio.Event()

    async def use(n: int) -> None:
        async with slots.hold():
            order.append(n)
            if n == 0:
                await release.wait()

    first = asyncio.create_task(use(0))
    await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(use(n)) for n in (1, 99, 2, 3)]
    await asyncio.sleep(0.2)  # past their first polls (5, 10, 20, 40, 80 ms): hand-overs only now
    waiting[1].cancel()
    release.set()
    await asyncio.wait_for(asyncio.gather(first, waiting[0], *waiting[2:]), 10)
    assert order == [0, 1, 2, 3] and waiting[1].cancelled()
