"""The sandbox (bubblewrap) with real processes: what a sandboxed run sees, and how it dies."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from app.config import get_settings
from app.procs import envs, sandbox, supervise
from app.procs.environ import build_env
from app.procs.tree import kill_process_tree
from app.trainings.runtimes import get_flavor, sandbox_limits, sandbox_network
from tests.sandboxing import require_sandbox
from worker import runner
from worker.runner import Outcome, RunSpec, build_argv

PYTHON = sys.executable


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("TRAINYARD_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture
def works() -> None:
    require_sandbox()


def write(path: Path, code: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A code folder (read-only in the sandbox), an output folder and a home (read-write)."""
    code, out, home = tmp_path / "code", tmp_path / "code" / "out", tmp_path / "home"
    code.mkdir(parents=True)
    sandbox.make_writable(out, home)
    return code, out, home


def spec_for(code: Path, out: Path, home: Path, **limits: int) -> sandbox.SandboxSpec:
    return sandbox.SandboxSpec(cwd=code, pythons=(PYTHON,), ro_paths=(code,),
                               rw_paths=(out, home), limits=sandbox.Limits(**limits))


def run_probe(tmp_path: Path, script: str, **limits: int) -> dict[str, object]:
    code, out, home = layout(tmp_path)
    boot = write(code / "probe.py", script)
    spec = spec_for(code, out, home, **limits)
    env = build_env({}, home=home, runtime_is_mindspore=False, python=PYTHON)
    proc = supervise.start([PYTHON, str(boot), str(out)], cwd=code, env=env, stdout=None,
                           grace_s=1.0, sandbox=spec)
    assert proc.wait(timeout=60) == 0
    result: dict[str, object] = json.loads((out / "found.json").read_text())
    return result


PROBE = """
    import json, os, resource, socket, sys
    found = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
             "pid": os.getpid(), "env": sorted(os.environ),
             "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
             "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
             "caps": [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")],
             "root": sorted(os.listdir("/"))}
    try:
        open(os.path.join(os.path.dirname(__file__), "planted.py"), "w")
        found["code_writable"] = True
    except OSError:
        found["code_writable"] = False
    with socket.socket() as s:
        s.settimeout(2)
        found["loopback_6379"] = s.connect_ex(("127.0.0.1", 6379))
    found["ifaces"] = [name for _, name in socket.if_nameindex()]
    json.dump(found, open(os.path.join(sys.argv[1], "found.json"), "w"))
"""


def test_probe_says_the_sandbox_works_here(works: None) -> None:
    state = sandbox.state()
    assert state.enabled and state.label == "on" and state.reason == ""


def test_a_sandboxed_process_sees_only_its_own_world(tmp_path: Path, works: None) -> None:
    # RLIMIT_NPROC counts every process and thread of the sandbox uid on the host (predictors of
    # other tests included), so the limit set here is checked, not exhausted.
    found = run_probe(tmp_path, PROBE, processes=8192)
    uid, gid = sandbox.sandbox_ids()
    assert found["uid"] == uid and found["gid"] == gid
    if os.geteuid() == 0:
        assert uid == get_settings().sandbox_uid != 0
        assert found["groups"] == [] and found["caps"] == ["0000000000000000"]
    assert found["pid"] == 2 and found["pids"] == [1, 2]  # bwrap's init and the program
    assert found["code_writable"] is False
    assert found["loopback_6379"] != 0 and found["ifaces"] == ["lo"]
    assert found["nproc"] == 8192
    assert set(found["env"]) <= {"HOME", "LANG", "LC_ALL", "ONEDNN_MAX_CPU_ISA", "PATH", "PWD",
                                 "PYTHONUNBUFFERED", "TMPDIR"}
    assert "data" not in json.dumps(found["root"])


def test_the_data_dir_and_the_repo_are_not_visible(tmp_path: Path, data_dir: Path,
                                                   works: None) -> None:
    (data_dir / "secret").parent.mkdir(parents=True, exist_ok=True)
    (data_dir / "secret").write_text("s3cret")
    here = Path(__file__).resolve()
    found = run_probe(tmp_path, f"""
        import json, os, sys
        out = {{}}
        for path in ({str(data_dir / "secret")!r}, {str(here)!r}, "/etc/shadow"):
            try:
                out[path] = open(path).read()[:20]
            except OSError as exc:
                out[path] = type(exc).__name__
        json.dump(out, open(os.path.join(sys.argv[1], "found.json"), "w"))
    """)
    assert set(found.values()) == {"FileNotFoundError"}, found


# A boot file whose tree tries to outlive the run: a setsid + double-fork daemon ignoring
# SIGTERM, and a main program that saves its state on SIGTERM (it must get the grace period).
ESCAPE = """
    import os, signal, sys, time
    out = sys.argv[1]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open(os.path.join(out, "daemon"), "w").write("up")
            time.sleep(1000)
        os._exit(0)
    def on_term(signum, frame):
        open(os.path.join(out, "saved"), "w").write("saved on SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    open(os.path.join(out, "main"), "w").write("up")
    time.sleep(1000)
"""


def sandboxed_processes(marker: Path) -> list[psutil.Process]:
    """Processes whose command line names `marker` (bwrap's and those inside it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(marker) in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def wait_for(path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_terminate_gives_the_grace_period_and_leaves_nothing(tmp_path: Path, works: None) -> None:
    code, out, home = layout(tmp_path)
    boot = write(code / "train.py", ESCAPE)
    env = build_env({}, home=home, runtime_is_mindspore=False, python=PYTHON)
    spec = RunSpec(argv=[*build_argv(PYTHON, boot, []), str(out)], cwd=code, env=env,
                   log_path=tmp_path / "log.txt", timeout_s=60, grace_s=3.0,
                   sandbox=spec_for(code, out, home))
    stop_at: list[float] = []

    def should_stop() -> bool:
        if (out / "daemon").exists() and (out / "main").exists() and not stop_at:
            stop_at.append(time.monotonic())
        return bool(stop_at)

    result = runner.run(spec, should_stop=should_stop, poll_s=0.05)
    assert result.outcome is Outcome.TERMINATED
    assert (out / "saved").read_text() == "saved on SIGTERM"
    assert sandboxed_processes(code) == []


def test_a_killed_reaper_takes_the_whole_sandbox_down(tmp_path: Path, works: None) -> None:
    code, out, home = layout(tmp_path)
    boot = write(code / "train.py", ESCAPE)
    env = build_env({}, home=home, runtime_is_mindspore=False, python=PYTHON)
    proc = supervise.start([PYTHON, str(boot), str(out)], cwd=code, env=env, stdout=None,
                           grace_s=1.0, sandbox=spec_for(code, out, home))
    try:
        wait_for(out / "daemon")
        wait_for(out / "main")
        assert len(sandboxed_processes(code)) >= 3
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while sandboxed_processes(code) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sandboxed_processes(code) == []
    finally:
        kill_process_tree(proc.pid, 0.5)


def test_death_by_signal_is_reported_as_such(tmp_path: Path, works: None) -> None:
    code, out, home = layout(tmp_path)
    boot = write(code / "train.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    env = build_env({}, home=home, runtime_is_mindspore=False, python=PYTHON)
    spec = RunSpec(argv=build_argv(PYTHON, boot, []), cwd=code, env=env,
                   log_path=tmp_path / "log.txt", timeout_s=60, grace_s=1.0,
                   sandbox=spec_for(code, out, home))
    result = runner.run(spec, should_stop=lambda: False)
    assert result.outcome is Outcome.FAILED
    assert result.reason == "killed by signal SIGKILL (out of memory?)"


def test_limits_hold_inside(tmp_path: Path, works: None) -> None:
    found = run_probe(tmp_path, """
        import json, os, sys
        out = {}
        try:
            bytearray(600 * 1024 * 1024)
            out["memory"] = "allocated"
        except MemoryError:
            out["memory"] = "refused"
        try:
            with open(os.path.join(sys.argv[1], "big"), "wb") as f:
                f.write(b"x" * (3 * 1024 * 1024))
            out["file"] = "written"
        except OSError as exc:
            out["file"] = type(exc).__name__
        json.dump(out, open(os.path.join(sys.argv[1], "found.json"), "w"))
    """, memory_mb=400, file_size_mb=2)
    assert found == {"memory": "refused", "file": "OSError"}


def test_off_mode_and_a_broken_bwrap_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_SANDBOX", "off")
    get_settings.cache_clear()
    state = sandbox.state()
    assert not state.enabled and "TRAINYARD_SANDBOX=off" in state.reason
    monkeypatch.setenv("TRAINYARD_SANDBOX", "on")
    monkeypatch.setenv("TRAINYARD_SANDBOX_BWRAP", "/nonexistent/bwrap")
    get_settings.cache_clear()
    sandbox.probe.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="/nonexistent/bwrap"):
            sandbox.require()
    finally:
        sandbox.probe.cache_clear()


def build_wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel holding `files` (path -> text)."""
    dist = f"{name.replace('-', '_')}-1.0"
    meta = {f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
            f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                       "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    entries = {**files, **meta}
    record = "".join(f"{path},,\n" for path in entries) + f"{dist}.dist-info/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in {**entries, f"{dist}.dist-info/RECORD": record}.items():
            zf.writestr(path, text)
    return wheel


def test_requirements_install_runs_no_package_code_outside(tmp_path: Path, works: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran-outside"
    name = f"trainyard-probe-{uuid.uuid4().hex[:8]}"
    module = name.replace("-", "_")
    build_wheel(tmp_path / "wheels", name, {
        f"{module}/__init__.py": "VALUE = 42\n",
        # Runs at every start of the env's interpreter: outside the sandbox it would leave
        # the marker; inside, the marker's folder is not even visible.
        f"{module}_boot.pth": f"import os; open({str(marker)!r}, 'w').write('pwned')\n",
    })
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    req = tmp_path / "pip-requirements.txt"
    req.write_text(f"{name}\n")
    log = tmp_path / "train.log"
    cache = tmp_path / "envs"
    python = envs.python_for_requirements(req, base_python=PYTHON, cache_dir=cache,
                                          log_path=log, sandboxed=True)
    env_dir = Path(python).parent.parent
    assert env_dir.parent == cache
    assert not marker.exists(), log.read_text()
    assert f"Successfully installed {name}" in log.read_text()
    owners = {p.stat().st_uid for p in [env_dir, *env_dir.rglob("*")] if not p.is_symlink()}
    assert owners == {os.getuid()}
    assert not list(cache.glob(".*.wheels"))
    # A run sees it read-only and gets the package.
    code, out, home = layout(tmp_path / "run")
    spec = sandbox.SandboxSpec(cwd=code, pythons=(PYTHON, python), ro_paths=(code,),
                               rw_paths=(out, home))
    done = subprocess.run(sandbox.wrap([python, "-c", f"import {module}; print({module}.VALUE)"],
                                       spec), capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "42", done.stderr
    assert not marker.exists()


def test_a_source_only_package_is_refused_in_the_sandbox(tmp_path: Path, works: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    name = f"trainyard-sdist-{uuid.uuid4().hex[:8]}"
    with tarfile.open(sdists / f"{name.replace('-', '_')}-1.0.tar.gz", "w:gz") as tf:
        data = b"from setuptools import setup\nsetup()\n"
        info = tarfile.TarInfo(f"{name.replace('-', '_')}-1.0/setup.py")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("PIP_FIND_LINKS", str(sdists))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    req = tmp_path / "pip-requirements.txt"
    req.write_text(f"{name}\n")
    with pytest.raises(envs.RequirementsError, match="binary wheels only"):
        envs.python_for_requirements(req, base_python=PYTHON, cache_dir=tmp_path / "envs",
                                     log_path=tmp_path / "log.txt", sandboxed=True)


def test_instance_types_get_their_limits_and_network_from_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    flavor = get_flavor("cpu.standard")
    assert sandbox_limits(flavor).memory_mb == 16384 and not sandbox_network(flavor)
    monkeypatch.setenv("TRAINYARD_SANDBOX_LIMITS",
                       '{"cpu.standard": {"memory_mb": 2048, "open_files": null}}')
    monkeypatch.setenv("TRAINYARD_SANDBOX_NETWORK_FLAVORS", '["cpu.standard"]')
    get_settings.cache_clear()
    limits = sandbox_limits(flavor)
    assert limits.memory_mb == 2048 and limits.open_files is None and limits.processes == 1024
    assert limits.rlimits()["RLIMIT_DATA"] == 2048 * 1024 * 1024
    assert "RLIMIT_NOFILE" not in limits.rlimits()
    assert sandbox_network(flavor)


def test_a_network_flavor_keeps_the_hosts_network(tmp_path: Path, works: None) -> None:
    code, out, home = layout(tmp_path)
    boot = write(code / "net.py", """
        import json, os, socket, sys
        names = [name for _, name in socket.if_nameindex()]
        json.dump(names, open(os.path.join(sys.argv[1], "found.json"), "w"))
    """)
    host = sorted(name for _, name in socket.if_nameindex())
    for network, expected in ((False, ["lo"]), (True, host)):
        spec = sandbox.SandboxSpec(cwd=code, pythons=(PYTHON,), ro_paths=(code,),
                                   rw_paths=(out, home), network=network)
        env = build_env({}, home=home, runtime_is_mindspore=False, python=PYTHON)
        proc = supervise.start([PYTHON, str(boot), str(out)], cwd=code, env=env, stdout=None,
                               grace_s=1.0, sandbox=spec)
        assert proc.wait(timeout=60) == 0
        assert sorted(json.loads((out / "found.json").read_text())) == expected


def test_a_path_reached_through_symlinks_is_the_same_inside(tmp_path: Path, works: None) -> None:
    real = tmp_path / "real" / "inputs"
    real.mkdir(parents=True)
    (real / "data.txt").write_text("same")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "rel").symlink_to("link/inputs")
    code, out, home = layout(tmp_path)
    boot = write(code / "read.py", """
        import json, os, sys
        paths = sys.argv[2:]
        json.dump([open(os.path.join(p, "data.txt")).read() for p in paths],
                  open(os.path.join(sys.argv[1], "found.json"), "w"))
    """)
    spec = sandbox.SandboxSpec(cwd=code, pythons=(PYTHON,), ro_paths=(code, tmp_path / "rel"),
                               rw_paths=(out, home))
    env = build_env({}, home=home, runtime_is_mindspore=False, python=PYTHON)
    argv = [PYTHON, str(boot), str(out), str(tmp_path / "rel"), str(real)]
    proc = supervise.start(argv, cwd=code, env=env, stdout=None, grace_s=1.0, sandbox=spec)
    assert proc.wait(timeout=60) == 0
    assert json.loads((out / "found.json").read_text()) == ["same", "same"]
