"""The suite's skip rules (tests/conftest.py): every run lists its skips and their reasons;
TRAINYARD_STRICT_SKIPS=1 (CI) fails on a skip outside the `shared_data` tests and
TRAINYARD_REQUIRE_SHARED_DATA=1 on theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TWO_SKIPS = '''
import pytest

@pytest.mark.shared_data
def test_needs_the_shared_folder():
    pytest.skip("../shared/data is absent")

def test_needs_a_tool():
    pytest.skip("the tool is missing")

def test_runs():
    pass
'''


def run_suite(tmp_path: Path, **flags: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_two_skips.py").write_text(TWO_SKIPS)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRAINYARD_STRICT_SKIPS", "TRAINYARD_REQUIRE_SHARED_DATA")}
    env.update(flags, PYTHONPATH=str(ROOT))
    # The project's pytest settings (markers) and conftest, on a test file of its own.
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest",
                           "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
                           "-p", "no:cacheprovider", str(tmp_path / "test_two_skips.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_skips_are_counted_with_their_reasons(tmp_path: Path) -> None:
    done = run_suite(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 skipped" in done.stdout
    assert "1 x ../shared/data is absent" in done.stdout
    assert "1 x the tool is missing" in done.stdout
    assert "SKIP NOT ALLOWED" not in done.stdout


@pytest.mark.parametrize(("flag", "forbidden", "allowed"), [
    ("TRAINYARD_STRICT_SKIPS", "test_needs_a_tool", "test_needs_the_shared_folder"),
    ("TRAINYARD_REQUIRE_SHARED_DATA", "test_needs_the_shared_folder", "test_needs_a_tool"),
])
def test_each_flag_fails_the_run_on_its_own_skips(tmp_path: Path, flag: str, forbidden: str,
                                                  allowed: str) -> None:
    done = run_suite(tmp_path, **{flag: "1"})
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    refused = [line for line in done.stdout.splitlines() if "SKIP NOT ALLOWED" in line]
    assert len(refused) == 1 and forbidden in refused[0] and f"{flag}=1" in refused[0], refused
    assert allowed not in refused[0]


def test_with_both_flags_no_skip_is_allowed(tmp_path: Path) -> None:
    done = run_suite(tmp_path, TRAINYARD_STRICT_SKIPS="1", TRAINYARD_REQUIRE_SHARED_DATA="1")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED
    assert done.stdout.count("SKIP NOT ALLOWED") == 2
