"""Where the partition test cannot make its hosts (not root, no iproute2) it fails and says why,
instead of skipping (issue 18): a CI run that lost its rights must not pass silently."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import netns

ROOT = Path(__file__).resolve().parents[2]


def test_without_iproute2_the_reason_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    if os.geteuid() == 0:
        assert "install iproute2" in netns.why_unavailable()
    else:
        assert "need root" in netns.why_unavailable()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change its effective uid")
def test_without_root_the_reason_says_so():
    os.seteuid(65534)
    try:
        reason = netns.why_unavailable()
    finally:
        os.seteuid(0)
    assert reason == "network namespaces need root (running as uid 65534); CI runs as root"


def test_the_partition_test_fails_and_does_not_skip_where_it_cannot_make_hosts(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/chaos/test_partition.py", "-m", "chaos", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT,
        env={**os.environ, "PATH": str(tmp_path)},  # no `ip`, no `tc`
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout[-2000:]
    assert "3 errors" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]
    assert "cannot here" in run.stdout and ("iproute2" in run.stdout or "need root" in run.stdout)
