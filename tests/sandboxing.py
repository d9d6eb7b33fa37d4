"""For tests of the sandbox: skip only where the kernel forbids it, and never in CI."""

from __future__ import annotations

import os

import pytest

from app.procs import sandbox

REQUIRE_FLAG = "TRAINYARD_REQUIRE_SANDBOX"


def require_sandbox() -> None:
    """Skip the test when the sandbox cannot run here (probe() says why); fail instead under
    TRAINYARD_REQUIRE_SANDBOX=1, which `.ci/run` sets."""
    works, why = sandbox.probe()
    if works:
        return
    message = f"the sandbox cannot run on this machine: {why}"
    if os.environ.get(REQUIRE_FLAG) == "1":
        pytest.fail(f"{message} ({REQUIRE_FLAG}=1: sandbox tests may not be skipped)")
    pytest.skip(message)
