"""The Mission Board's API types stay in step with the gateway: `make api-types` regenerates both
files, and these tests fail when either committed copy drifts from what the code produces."""

import shutil
import subprocess
from pathlib import Path

from aether_gateway.openapi import document

UI = Path(__file__).resolve().parents[2] / "ui"
GENERATOR = UI / "node_modules" / ".bin" / "openapi-typescript"
STALE = "is stale: run `make api-types` and commit the result"


def test_the_committed_openapi_document_is_the_gateways():
    assert (UI / "openapi.json").read_text() == document(), f"ui/openapi.json {STALE}"


def test_the_committed_typescript_types_are_generated_from_that_document():
    assert shutil.which("node"), "Node.js is needed for the UI tests (see README: Mission Board)"
    assert GENERATOR.exists(), "the UI's packages are not installed: run `make ui`"
    generated = subprocess.run(
        [str(GENERATOR), str(UI / "openapi.json")], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert (UI / "src" / "gen" / "openapi.ts").read_text() == generated, f"ui/src/gen/openapi.ts {STALE}"


def test_the_stream_messages_are_in_the_document_for_clients_to_generate():
    text = (UI / "src" / "gen" / "openapi.ts").read_text()
    for message in ("TaskEventMessage", "TaskStateMessage", "TaskStepMessage", "TaskEndMessage", "BoardTaskMessage", "BoardReadyMessage"):
        assert f"        {message}: {{" in text, message
