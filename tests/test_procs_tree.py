"""The process-tree helpers of app.procs.tree on real processes: stopping what is below a
process, asking a worker's pool grandchildren to stop, and recognising a recorded pid."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from app.procs.tree import kill_descendants, pid_runs, signal_name, terminate_grandchildren

# A parent that starts `child`, which starts what CHILD_STARTS says; each writes its pid to
# a file named after it, then sleeps. `stubborn` ignores SIGTERM.
TREE = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    pids, role = sys.argv[1], sys.argv[2]
    open(os.path.join(pids, role), "w").write(str(os.getpid()))
    if role == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    starts = {"parent": [("child", False)],
              "child": [("leader", True), ("plain", False), ("stubborn", False)],
              "leader": [("in-group", False)]}
    for name, new_session in starts.get(role, []):
        subprocess.Popen([sys.executable, __file__, pids, name], start_new_session=new_session)
    time.sleep(120)
""")
ROLES = ("parent", "child", "leader", "plain", "stubborn", "in-group")


def start_tree(tmp_path: Path) -> tuple[subprocess.Popen[bytes], dict[str, psutil.Process]]:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    pids = tmp_path / "pids"
    pids.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(pids), "parent"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all((pids / role).exists() and (pids / role).read_text() for role in ROLES):
            return parent, {role: psutil.Process(int((pids / role).read_text()))
                            for role in ROLES}
        time.sleep(0.05)
    parent.kill()
    raise AssertionError(f"the tree did not start: {sorted(p.name for p in pids.iterdir())}")


def runs(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone_within(procs: list[psutil.Process], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(runs(p) for p in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_kill_descendants_stops_everything_below_and_spares_the_root(tmp_path: Path) -> None:
    parent, procs = start_tree(tmp_path)
    try:
        started = time.monotonic()
        kill_descendants(0.5, pid=parent.pid)
        below = [procs[r] for r in ROLES if r != "parent"]
        # The stubborn one ignores SIGTERM: it needed the SIGKILL after the grace period.
        assert gone_within(below, 5), [p.pid for p in below if runs(p)]
        assert time.monotonic() - started >= 0.5
        assert parent.poll() is None
    finally:
        parent.kill()
        parent.wait()


def test_terminate_grandchildren_signals_groups_and_single_processes(tmp_path: Path) -> None:
    parent, procs = start_tree(tmp_path)
    try:
        # The parent stands for a worker's main process, child for a pool process: what the
        # pool process started gets SIGTERM, a group leader's whole group with it.
        assert terminate_grandchildren(parent.pid) == 3
        assert gone_within([procs["leader"], procs["in-group"], procs["plain"]], 5)
        assert runs(procs["stubborn"])  # SIGTERM only: it was asked, not forced
        assert runs(procs["child"]) and parent.poll() is None
        assert terminate_grandchildren(2**22 + 12345) == 0  # no such process
    finally:
        kill_descendants(0.1, pid=parent.pid)
        parent.kill()
        parent.wait()


def test_pid_runs_checks_liveness_and_an_argument() -> None:
    marker = "trainyard-test-marker"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        assert pid_runs(proc.pid)
        deadline = time.monotonic() + 10
        while not pid_runs(proc.pid, argument=marker):  # until it has exec'd python
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not pid_runs(proc.pid, argument="trainyard-test")  # whole arguments only
        proc.kill()
        deadline = time.monotonic() + 5
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not pid_runs(proc.pid)  # a zombie does not run
    finally:
        proc.kill()
        proc.wait()
    assert not pid_runs(proc.pid)


def test_signal_names() -> None:
    assert signal_name(9) == "SIGKILL"
    assert signal_name(15) == "SIGTERM"
    assert signal_name(40) == "40"  # a real-time signal has no name of its own
