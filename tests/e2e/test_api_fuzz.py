"""schemathesis against the gateway's own OpenAPI schema, on the running stack: no 5xx, every
response as documented, schema-valid requests accepted. (A longer run: `make fuzz`.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

BUDGET_S = os.environ.get("AETHER_FUZZ_SECONDS", "45")


def test_the_gateway_holds_up_against_schemathesis(tmp_path: Path):
    stack = Stack(env={"AETHER_MAX_ACTIVE_TASKS": "100000"}).start()
    report = tmp_path / "schemathesis.json"
    try:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"), "run", f"{stack.url}/openapi.json",
                "-H", f"Authorization: Bearer {stack.api_key}",
                "--checks", "all",
                "--phases", "examples,coverage,fuzzing,stateful",
                "--max-time", BUDGET_S,
                "--seed", "7",
                "--report", "json", "--report-json-path", str(report),
            ],
            capture_output=True,
            text=True,
            timeout=int(BUDGET_S) * 4 + 120,
        )
    finally:
        stack.stop()
    summary = result.stdout[result.stdout.rfind("SUMMARY"):]
    print(summary)  # the case count goes into the test log
    assert result.returncode == 0, result.stdout[-8000:]
    assert "passed" in summary and "generated" in summary
    data = json.loads(report.read_text())
    assert data, "schemathesis wrote no report"
