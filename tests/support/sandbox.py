"""Whether experts' commands can run here. On a branch where `aether_core.sandbox` is still its
placeholder, run_command steps are errors and every check fails as 'could not run': the tests
that need a command to run are skipped there, and run (and must pass) once the sandbox lands."""

import pytest

from aether_core.sandbox import detect

_SANDBOX = detect()

needs_sandbox = pytest.mark.skipif(
    not _SANDBOX.available and "placeholder" in _SANDBOX.reason,
    reason=f"no sandbox to run commands in: {_SANDBOX.reason}",
)
