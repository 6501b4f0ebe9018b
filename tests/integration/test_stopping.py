"""A stop that hangs still ends (aether_core.stopping): every service, run as `make up` and a
pod run it (`python -m ...`) against a real nats-server, exits within AETHER_STOP_TIMEOUT_S of its
SIGTERM even when its graceful stop cannot finish, and says where it waited.

The hang is a real one: the NATS server is frozen (SIGSTOP), so the connection stays open and
the drain of a stopping service waits for answers that never come (nats-py's drain timeout is
30 s, FastStream's graceful timeout 30 s). Without the guard each service takes that long; a
devstack killed with its reaper left a service running that way in CI, with nothing left to
send it a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aether_core.stopping import EXIT_CODE
from tests.support.nats import NatsServer, declared
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(300)

STOP_TIMEOUT_S = 4.0
READY = {
    "aether_gateway": "Application startup complete",
    "aether_planner": "FastStream app started successfully",
    "aether_synthesizer": "FastStream app started successfully",
    "aether_executor": "FastStream app started successfully",
    "aether_container_manager": "FastStream app started successfully",
}


def start_all(nats: NatsServer, logs: Path) -> dict[str, tuple[subprocess.Popen, Path]]:
    env = {
        **os.environ,
        "AETHER_NATS_URL": nats.url,
        "AETHER_STOP_TIMEOUT_S": str(STOP_TIMEOUT_S),
        "AETHER_AUTH": "off",
        "AETHER_HTTP_HOST": "127.0.0.1",
        "AETHER_HTTP_PORT": str(free_port()),
        "AETHER_AGENT_LOG_DIR": str(logs / "agents"),
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never called: nothing is submitted
        "OPENAI_API_KEY": "unused",
    }
    env.pop("AETHER_PROBE_PORT", None)
    started = {}
    for module in READY:
        log = logs / f"{module}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        started[module] = (process, log)
    deadline = time.monotonic() + 120
    for module, (process, log) in started.items():
        while READY[module] not in log.read_text(errors="replace"):
            assert process.poll() is None, f"{module} exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{module} is not up: {log.read_text()[-3000:]}"
            time.sleep(0.1)
    return started


def stop_all(started: dict[str, tuple[subprocess.Popen, Path]]) -> dict[str, tuple[int, float]]:
    """SIGTERM to each at once: module -> (exit status, seconds it took)."""
    t0 = time.monotonic()
    for process, _ in started.values():
        process.send_signal(signal.SIGTERM)
    ended = {}
    deadline = t0 + 60
    while len(ended) < len(started) and time.monotonic() < deadline:
        for module, (process, _) in started.items():
            if module not in ended and process.poll() is not None:
                ended[module] = (process.returncode, time.monotonic() - t0)
        time.sleep(0.05)
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()
    return ended


def test_a_stop_that_hangs_ends_after_the_stop_timeout_and_says_where_it_waited(tmp_path):
    nats = declared(NatsServer().start())
    started: dict = {}
    try:
        started = start_all(nats, tmp_path)
        nats.process.send_signal(signal.SIGSTOP)
        ended = stop_all(started)
    finally:
        if nats.process is not None:
            nats.process.send_signal(signal.SIGCONT)
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
        nats.stop(kill=True)
    logs = {module: log.read_text(errors="replace") for module, (_, log) in started.items()}
    print({module: (status, round(took, 2)) for module, (status, took) in ended.items()})
    assert set(ended) == set(READY), f"still running a minute after SIGTERM: {set(READY) - set(ended)}"
    for module, (status, took) in ended.items():
        assert status == EXIT_CODE, f"{module} exited {status} after {took:.1f} s:\n{logs[module][-3000:]}"
        assert STOP_TIMEOUT_S <= took < STOP_TIMEOUT_S + 10, f"{module}: {took:.1f} s"
        line = next(line for line in logs[module].splitlines() if "did not stop within" in line)
        assert f"within {STOP_TIMEOUT_S:.0f} s of its stop signal (AETHER_STOP_TIMEOUT_S)" in line, line
        # Where it waited: the threads' stacks (faulthandler's) and the pending tasks.
        assert "most recent call first" in logs[module], logs[module][-3000:]
        assert "\ntask " in logs[module], logs[module][-3000:]


def test_a_stop_that_finishes_is_not_cut_short(tmp_path):
    nats = declared(NatsServer().start())
    started: dict = {}
    try:
        started = start_all(nats, tmp_path)
        ended = stop_all(started)
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
        nats.stop()
    for module, (status, took) in ended.items():
        log = started[module][1].read_text(errors="replace")
        # uvicorn ends by raising the signal it caught again, once it has stopped (its design).
        expected = -signal.SIGTERM if module == "aether_gateway" else 0
        assert status == expected, f"{module} exited {status} after {took:.1f} s:\n{log[-3000:]}"
        assert took < STOP_TIMEOUT_S, f"{module}: {took:.1f} s"
        assert "did not stop within" not in log
