"""For tests of the sandbox: skip only where the kernel forbids it, and never in CI."""

from __future__ import annotations

import os
import tempfile

import pytest

from app.config import get_settings
from app.procs import sandbox

REQUIRE_FLAG = "TRAINYARD_REQUIRE_SANDBOX"


def require_sandbox() -> None:
    """Skip the test when the sandbox cannot run here (probe() says why); fail instead under
    TRAINYARD_REQUIRE_SANDBOX=1, which `.ci/run` sets."""
    works, why = _probe()
    if works:
        return
    message = f"the sandbox cannot run on this machine: {why}"
    if os.environ.get(REQUIRE_FLAG) == "1":
        pytest.fail(f"{message} ({REQUIRE_FLAG}=1: sandbox tests may not be skipped)")
    pytest.skip(message)


def _probe() -> tuple[bool, str]:
    # The probe writes the sandbox's passwd file into the data dir: never the checkout's .data.
    if os.environ.get("TRAINYARD_DATA_DIR"):
        return sandbox.probe()
    with tempfile.TemporaryDirectory(prefix="trainyard-probe-") as tmp:
        os.environ["TRAINYARD_DATA_DIR"] = tmp
        get_settings.cache_clear()
        try:
            return sandbox.probe()
        finally:
            del os.environ["TRAINYARD_DATA_DIR"]
            get_settings.cache_clear()
