"""Every way `make up` ends leaves nothing running (issue 18): a start that fails, SIGTERM, Ctrl-C
(SIGINT to its process group, as a terminal sends it), SIGKILL (the children's parent-death
signal and the reaper end them), and SIGKILL with the reaper killed first (the parent-death
signal alone, with the services' own stop timeout behind it). Each time every process it started,
an agent in a session of its own included, is gone and its ports are free; after a failed start
and after the hardest kill a second start in the same place (same ports, same data directory)
comes up."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aether_devstack.images import BUILD_DIR as IMAGES_BUILD
from aether_devstack.reaper import start_time
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

WARM_AGENT = {"AETHER_POOL_OVERRIDES": "python-backend:min=1"}
"""A warm agent: a grandchild of the devstack, in a session of its own (the container-manager's)."""


def family(root: int) -> dict[int, tuple[int, str]]:
    """Every live descendant of `root`: pid -> (start time, command line)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, tuple[int, str]] = {}
    todo = list(parents.get(root, ()))
    while todo:
        pid = todo.pop()
        started = start_time(pid)
        if started is None:
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        found[pid] = (started, command)
        todo.extend(parents.get(pid, ()))
    return found


def survivors(recorded: dict[int, tuple[int, str]]) -> list[str]:
    """The recorded processes still running (the same pid *and* start time)."""
    return [f"{pid} {command}" for pid, (started, command) in recorded.items() if start_time(pid) == started]


def wait_gone(recorded: dict[int, tuple[int, str]], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := survivors(recorded)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def ports_taken(stack: Stack) -> list[int]:
    taken = []
    for port in (stack.http_port, stack.sim_port, stack.nats_port, stack.monitor_port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                taken.append(port)
    return taken


def commands(recorded: dict[int, tuple[int, str]]) -> str:
    return "\n".join(command for _, command in recorded.values())


def kill_left(recorded: dict[int, tuple[int, str]]) -> None:
    """After a failed assertion: leave the machine as it was for the next tests."""
    for line in survivors(recorded):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def start_in_the_same_place(stack: Stack, without: tuple[str, ...] = ()) -> None:
    second = stack.again()
    for name in without:
        second.env.pop(name, None)
    second.start(timeout=240)
    second.stop()


def remember(recorded: dict[int, tuple[int, str]], sample: dict[int, tuple[int, str]]) -> None:
    """Adds a sample of the process table, keeping a process's command line once seen: one
    exiting (a zombie) reads as empty, and a later sample must not erase what it ran."""
    for pid, (parent, command) in sample.items():
        if command or pid not in recorded:
            recorded[pid] = (parent, command)


def run_until_it_gives_up(stack: Stack, timeout: float) -> tuple[subprocess.Popen, dict[int, tuple[int, str]]]:
    """Start the devstack and record every process it starts until it exits by itself."""
    process = stack.launch()
    recorded: dict[int, tuple[int, str]] = {}
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        remember(recorded, family(process.pid))
        time.sleep(0.05)
    return process, recorded


@contextlib.contextmanager
def cleaned_up(stack: Stack, process: subprocess.Popen, recorded: dict[int, tuple[int, str]]) -> Iterator[None]:
    try:
        yield
    finally:
        if process.poll() is None:
            stack.stop()
        kill_left(recorded)


def test_a_start_that_fails_stops_what_it_started_and_says_why(tmp_path):
    # A typo in a setting only the gateway reads, which starts last: everything else is running
    # when it fails, and it fails at every restart.
    missing = tmp_path / "no-such-keys-file"
    stack = Stack(env={"AETHER_API_KEYS_FILE": str(missing)})
    process, recorded = run_until_it_gives_up(stack, 240)
    with cleaned_up(stack, process, recorded):
        assert process.poll() == 1, f"the devstack did not give up:\n{stack.log_tail()}"
        log = stack.log_tail(20000)
        assert "gateway exited 3 times while the stack started" in log, log
        assert f"AETHER_API_KEYS_FILE {missing}" in log, log  # the gateway's own reason
        everything = commands(recorded)
        for started in ("nats-server", "reaper"):
            assert started in everything, f"{started} was not running when the start failed:\n{everything}"
        # The services too: in the process table, or by their lines in the log (loaded, a sample
        # has caught a service only as it exited, with an empty command line).
        for started, name in (("aether_simulator", "simulator"), ("aether_planner", "planner"),
                              ("aether_container_manager", "container-manager")):
            assert started in everything or f"\n{name} " in log, f"{started} did not run:\n{everything}\n{log}"
        assert not survivors(recorded), survivors(recorded)
        assert not ports_taken(stack)
    start_in_the_same_place(stack, without=("AETHER_API_KEYS_FILE",))


def test_an_agent_image_that_cannot_be_built_ends_the_start_with_the_reason():
    # No Docker engine at that address: the image can be neither found nor built.
    stack = Stack(env={"AETHER_AGENT_BACKEND": "docker", "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    process, recorded = run_until_it_gives_up(stack, 120)
    with cleaned_up(stack, process, recorded):
        assert process.poll() == 1, stack.log_tail()
        log = stack.log_tail()
        assert "the agent image aether-executor:latest could not be built" in log, log
        assert "Cannot connect to the Docker daemon" in log, log
        assert "AETHER_AGENT_BACKEND=process" in log, log  # what to do instead
        # The build is tried before anything is started: no NATS is left holding its ports.
        assert "nats-server" not in commands(recorded)
        assert not survivors(recorded), survivors(recorded)
        assert not ports_taken(stack)


@pytest.mark.docker
def test_a_ctrl_c_during_the_agent_image_build_ends_the_build_too():
    from tests.conftest import _docker
    from tests.support.containers import require_docker

    if not _docker():
        if require_docker():
            pytest.fail("AETHER_REQUIRE_DOCKER=1 but no Docker engine answers")
        pytest.skip("no Docker engine")
    # A package index that accepts connections and never answers: the build waits in
    # `pip download` (a child of the image step's child) until it is stopped.
    index = socket.socket()
    index.bind(("127.0.0.1", 0))
    index.listen(64)
    stack = Stack(env={
        "AETHER_AGENT_BACKEND": "docker",
        "AETHER_AGENT_IMAGE": "aether-test-never-built:none",
        "PIP_INDEX_URL": f"http://127.0.0.1:{index.getsockname()[1]}/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_TRUSTED_HOST": "127.0.0.1",
    })
    staging_before = set(IMAGES_BUILD.parent.glob("deps-*")) if IMAGES_BUILD.parent.exists() else set()
    # The wheels an earlier image build gathered would be reused (no `pip download` to stop):
    # set their stamp aside, so this build gathers them again; they stay, and so does the stamp.
    stamp = IMAGES_BUILD / "deps.key"
    kept = stamp.read_bytes() if stamp.exists() else None
    stamp.unlink(missing_ok=True)
    process = stack.launch(own_group=True)
    recorded: dict[int, tuple[int, str]] = {}
    try:
        deadline = time.monotonic() + 120
        while "pip download" not in commands(recorded) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            remember(recorded, family(process.pid))
        assert "pip download" in commands(recorded), stack.log_tail()
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(60) == 0, stack.log_tail()
        assert not survivors(recorded), survivors(recorded)
        assert "nats-server" not in commands(recorded)  # nothing else was started meanwhile
        assert set(IMAGES_BUILD.parent.glob("deps-*")) <= staging_before, "the build left its staging directory"
    finally:
        index.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_left(recorded)
        if kept is not None:
            stamp.write_bytes(kept)


def test_a_port_in_use_is_named_before_anything_starts():
    stack = Stack()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", stack.monitor_port))
        holder.listen()
        process = stack.launch()
        assert process.wait(120) == 1, stack.log_tail()
    log = stack.log_tail()
    assert f"127.0.0.1:{stack.monitor_port} (NATS monitoring, AETHER_NATS_MONITOR_PORT)" in log, log
    assert "nats-server" not in log.split("in use:")[0]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to its group", "SIGKILL", "SIGKILL after its reaper"])
def test_every_child_ends_with_the_devstack(how):
    stack = Stack(env=WARM_AGENT).start(timeout=240, own_group=True)
    assert stack.process is not None
    process = stack.process
    recorded: dict[int, tuple[int, str]] = {}
    try:
        deadline = time.monotonic() + 120
        while "aether_executor worker" not in commands(recorded) and time.monotonic() < deadline:
            time.sleep(0.2)
            recorded = family(process.pid)
        everything = commands(recorded)
        for started in ("nats-server", "aether_simulator", "aether_gateway", "aether_container_manager",
                        "aether_executor worker", "aether_devstack.reaper"):
            assert started in everything, f"{started} is not running:\n{everything}\n{stack.log_tail()}"

        if how == "SIGTERM":
            process.send_signal(signal.SIGTERM)
        elif how == "SIGINT to its group":
            os.killpg(process.pid, signal.SIGINT)
        elif how == "SIGKILL":
            process.kill()
        else:
            reaper = next(pid for pid, (_, cmd) in recorded.items() if "aether_devstack.reaper" in cmd)
            os.kill(reaper, signal.SIGKILL)
            process.kill()
        code = process.wait(180)
        assert code == (-signal.SIGKILL if how.startswith("SIGKILL") else 0), stack.log_tail()
        # The devstack waits for its children before it exits; killed, the others end them.
        left = wait_gone(recorded, 0 if code == 0 else 120)
        assert not left, f"{how}: still running:\n" + "\n".join(left) + f"\n{stack.log_tail()}"
        assert not ports_taken(stack)
        if how == "SIGKILL":
            assert "the devstack (pid" in stack.log_tail(), stack.log_tail()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stack.process = None
        kill_left(recorded)
    if how == "SIGKILL after its reaper":
        # The end that leaves the most behind, if anything does: a second start in the same place
        # (the ports, the data directory, the agents' scope) comes up. Once: a start is ~30 s here.
        start_in_the_same_place(stack)
