"""`make up` itself: every service its own process, restarted on crash, all stopped on SIGTERM."""

import os

import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def test_sigterm_stops_every_child_and_scale_runs_replicas():
    stack = Stack(scale="executor=2").start()
    try:
        children = stack.children()
        assert {"nats", "simulator", "gateway", "planner", "executor-1", "executor-2", "synthesizer"} <= children.keys()
        pids = [c["pid"] for c in children.values()]
        assert len(set(pids)) == len(pids) and all(alive(p) for p in pids)
    finally:
        stack.stop()
    assert stack.process is None
    assert not [p for p in pids if alive(p)], "a child outlived the supervisor"
