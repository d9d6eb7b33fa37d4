"""The job runner and requirement environments, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import psutil
import pytest

from app.procs import cpu, envs
from app.procs.environ import build_env, is_reserved_env_name
from app.procs.logfiles import tail_lines
from worker import runner
from worker.runner import Outcome, RunSpec, build_argv

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# A process tree that tries to escape: the boot file starts a child that calls setsid(), that
# child starts a grandchild ignoring SIGTERM and double-forks a daemon ignoring SIGTERM.
TREE_BOOT = """
    import os, subprocess, sys
    pids = dict(a[2:].split("=", 1) for a in sys.argv[1:])["pids"]
    open(os.path.join(pids, "boot"), "w").write(str(os.getpid()))
    subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "child.py"), pids])
    while True:
        print("training", flush=True)
        os.system("sleep 0.5")
"""
TREE_CHILD = """
    import os, signal, subprocess, sys, time
    pids = sys.argv[1]
    def mark(name):
        with open(os.path.join(pids, name + ".tmp"), "w") as f:
            f.write(str(os.getpid()))
        os.replace(os.path.join(pids, name + ".tmp"), os.path.join(pids, name))
    os.setsid()
    mark("child")
    subprocess.Popen([sys.executable, "-c", "import os, signal, sys, time\\n"
                      "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
                      "open(sys.argv[1], 'w').write(str(os.getpid()))\\n"
                      "time.sleep(1000)", os.path.join(pids, "grandchild")])
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            mark("daemon")
            time.sleep(1000)
        os._exit(0)
    time.sleep(1000)
"""
TREE_NAMES = ("boot", "child", "grandchild", "daemon")


def write(path: Path, code: str) -> Path:
    path.write_text(textwrap.dedent(code))
    return path


def spec_for(tmp_path: Path, boot: Path, args: list[tuple[str, str]] | None = None,
             **overrides: object) -> RunSpec:
    env = build_env({}, home=tmp_path / "home", runtime_is_mindspore=False, python=PYTHON)
    fields: dict[str, object] = {
        "argv": build_argv(PYTHON, boot, args or []), "cwd": boot.parent, "env": env,
        "log_path": tmp_path / "logs" / "train.log", "timeout_s": 60.0, "grace_s": 1.0,
    }
    fields.update(overrides)
    return RunSpec(**fields)  # type: ignore[arg-type]


def never() -> bool:
    return False


def wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def is_gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tree_processes(pids_dir: Path) -> dict[str, psutil.Process] | None:
    """The processes of TREE_BOOT once every one has written its pid, else None."""
    found = {}
    for name in TREE_NAMES:
        try:
            found[name] = psutil.Process(int((pids_dir / name).read_text()))
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
            return None
    return found


def tree_boot(tmp_path: Path) -> tuple[Path, Path]:
    pids = tmp_path / "pids"
    pids.mkdir()
    write(tmp_path / "child.py", TREE_CHILD)
    return write(tmp_path / "train.py", TREE_BOOT), pids


# --- running ---------------------------------------------------------------------------------

def test_output_reaches_the_log_while_running_and_the_run_completes(tmp_path: Path) -> None:
    boot = write(tmp_path / "train.py", """
        import os, sys, time
        args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
        print("epoch 1 started, epochs =", args["epochs"])
        release = os.path.join(args["output_url"], "release")
        deadline = time.time() + 20
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.05)
        with open(os.path.join(args["output_url"], "model.ckpt"), "w") as f:
            f.write("weights")
        print("done")
    """)
    out = tmp_path / "output"
    out.mkdir()
    spec = spec_for(tmp_path, boot, [("epochs", "2"), ("output_url", f"{out}/")])
    seen_while_running: list[str] = []

    def should_stop() -> bool:
        log = spec.log_path.read_text()
        if "epoch 1 started" in log and not seen_while_running:
            seen_while_running.append(log)
            (out / "release").touch()
        return False

    started: list[int] = []
    result = runner.run(spec, should_stop=should_stop, on_started=started.append, poll_s=0.05)
    assert result.outcome is Outcome.COMPLETED
    assert (result.exit_code, result.reason, result.error_tail) == (0, "exited with code 0", "")
    assert seen_while_running and "epochs = 2" in seen_while_running[0]
    assert "done" not in seen_while_running[0]
    assert (out / "model.ckpt").read_text() == "weights"
    log = spec.log_path.read_text().splitlines()
    assert log[0] == f"[trainyard] $ {PYTHON} {boot} --epochs=2 --output_url={out}/"
    assert log[1:3] == ["epoch 1 started, epochs = 2", "done"]
    assert log[3].startswith("[trainyard] exited with code 0 after ")
    assert not psutil.pid_exists(started[0])  # reaped


def test_non_zero_exit_fails_with_the_tail_of_the_log(tmp_path: Path) -> None:
    boot = write(tmp_path / "train.py", """
        import sys
        for i in range(100):
            print("step", i)
        sys.stderr.write("ValueError: bad learning rate\\n")
        sys.exit(3)
    """)
    spec = spec_for(tmp_path, boot, error_tail_lines=5)
    result = runner.run(spec, should_stop=never)
    assert result.outcome is Outcome.FAILED
    assert (result.exit_code, result.reason) == (3, "exited with code 3")
    assert result.error_tail.splitlines() == [
        "step 96", "step 97", "step 98", "step 99", "ValueError: bad learning rate"]


def test_terminate_kills_the_whole_tree_including_setsid_escapees(tmp_path: Path) -> None:
    boot, pids_dir = tree_boot(tmp_path)
    spec = spec_for(tmp_path, boot, [("pids", str(pids_dir))], grace_s=1.0)
    procs: dict[str, psutil.Process] = {}
    sessions: dict[str, int] = {}
    asked_at: list[float] = []

    def should_stop() -> bool:
        if not procs and (found := tree_processes(pids_dir)):
            procs.update(found)
            sessions.update({name: os.getsid(p.pid) for name, p in found.items()})
            asked_at.append(time.monotonic())
        return bool(procs)

    result = runner.run(spec, should_stop=should_stop, poll_s=0.1)
    assert result.outcome is Outcome.TERMINATED
    assert result.reason == "terminated on request"
    assert set(procs) == set(TREE_NAMES)
    assert len({p.pid for p in procs.values()}) == 4
    # They really escaped: three sessions, and the daemon's parent had exited.
    assert len({sessions["boot"], sessions["child"], sessions["daemon"]}) == 3
    assert sessions["grandchild"] == sessions["child"]
    assert wait_until(lambda: all(is_gone(p) for p in procs.values()), 10.0 - (
        time.monotonic() - asked_at[0]))
    assert time.monotonic() - asked_at[0] < 10.0
    assert spec.log_path.read_text().splitlines()[-1].startswith(
        "[trainyard] terminated on request after ")


def test_a_killed_worker_takes_its_training_down(tmp_path: Path) -> None:
    boot, pids_dir = tree_boot(tmp_path)
    spec = spec_for(tmp_path, boot, [("pids", str(pids_dir))], grace_s=1.0)
    fake_worker = write(tmp_path / "worker.py", f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from worker.runner import RunSpec, run
        spec = RunSpec(argv={spec.argv!r}, cwd=Path({str(spec.cwd)!r}), env={spec.env!r},
                       log_path=Path({str(spec.log_path)!r}), timeout_s=60, grace_s=1.0)
        run(spec, should_stop=lambda: False)
    """)
    worker = subprocess.Popen([PYTHON, str(fake_worker)])
    procs: dict[str, psutil.Process] = {}
    try:
        assert wait_until(lambda: bool(procs.update(tree_processes(pids_dir) or {}) or procs),
                          20.0)
    finally:
        worker.kill()
        worker.wait()
    assert set(procs) == set(TREE_NAMES)
    assert wait_until(lambda: all(is_gone(p) for p in procs.values()), 10.0)


def test_timeout_stops_the_run(tmp_path: Path) -> None:
    boot = write(tmp_path / "train.py", """
        import time
        print("sleeping", flush=True)
        time.sleep(1000)
    """)
    spec = spec_for(tmp_path, boot, timeout_s=1.0)
    started = time.monotonic()
    result = runner.run(spec, should_stop=never, poll_s=0.1)
    assert result.outcome is Outcome.TIMEOUT
    assert result.reason == "ran past the time limit of 1 s"
    assert 1.0 <= result.duration_s < 4.0 and time.monotonic() - started < 4.0
    assert "sleeping" in result.error_tail


def test_an_interrupted_supervisor_kills_the_tree_and_re_raises(tmp_path: Path) -> None:
    boot, pids_dir = tree_boot(tmp_path)
    spec = spec_for(tmp_path, boot, [("pids", str(pids_dir))], grace_s=0.5)
    procs: dict[str, psutil.Process] = {}

    def should_stop() -> bool:
        if found := tree_processes(pids_dir):
            procs.update(found)
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        runner.run(spec, should_stop=should_stop, poll_s=0.1)
    assert wait_until(lambda: all(is_gone(p) for p in procs.values()), 10.0)
    assert "worker was interrupted" in spec.log_path.read_text()


def test_a_missing_interpreter_fails_clearly(tmp_path: Path) -> None:
    boot = write(tmp_path / "train.py", "print('hi')\n")
    spec = spec_for(tmp_path, boot, argv=["/nonexistent/python", str(boot)])
    result = runner.run(spec, should_stop=never)
    assert result.outcome is Outcome.FAILED and result.exit_code is None
    assert "/nonexistent/python is not an executable file" in result.reason
    assert result.reason in spec.log_path.read_text()


def test_a_bare_interpreter_name_is_looked_up_on_the_child_path(tmp_path: Path) -> None:
    boot = write(tmp_path / "train.py", "import sys\nprint(sys.executable)\n")
    spec = spec_for(tmp_path, boot, argv=[Path(PYTHON).name, str(boot)])
    assert runner.run(spec, should_stop=never).outcome is Outcome.COMPLETED
    assert spec.log_path.read_text().splitlines()[1] == PYTHON


def test_a_program_killed_by_a_signal_fails_with_its_name(tmp_path: Path) -> None:
    boot = write(tmp_path / "train.py", "import os, signal\nos.kill(os.getpid(), 9)\n")
    result = runner.run(spec_for(tmp_path, boot), should_stop=never)
    assert result.outcome is Outcome.FAILED and result.exit_code == -signal.SIGKILL
    assert result.reason == "killed by signal SIGKILL (out of memory?)"


# --- environment -----------------------------------------------------------------------------

def test_the_training_gets_a_clean_environment(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"TRAINYARD_ADMIN_TOKEN": "s3cret", "TRAINYARD_DATABASE_URL": "postgresql://x",
               "REDIS_URL": "redis://localhost:6379/0", "CELERY_BROKER_URL": "redis://x"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    boot = write(tmp_path / "train.py", """
        import json, os, tempfile
        print("ENV", json.dumps(dict(os.environ)))
        with tempfile.NamedTemporaryFile() as f:
            print("TMP", f.name)
    """)
    home = tmp_path / "home"
    env = build_env({"DATA_ROOT": "/data", "LANG": "en_US.UTF-8"}, home=home,
                    runtime_is_mindspore=False, python=PYTHON, extra={"RANK_ID": "0"})
    spec = spec_for(tmp_path, boot, env=env)
    assert runner.run(spec, should_stop=never).outcome is Outcome.COMPLETED
    lines = spec.log_path.read_text().splitlines()
    child_env = json.loads(next(x for x in lines if x.startswith("ENV "))[4:])
    assert not set(secrets) & set(child_env)
    assert not [k for k in child_env if k.startswith(("TRAINYARD_", "CELERY", "REDIS"))]
    assert set(child_env) - {"PWD", "SHLVL", "_", "LC_CTYPE"} == {
        "PATH", "HOME", "TMPDIR", "LANG", "PYTHONUNBUFFERED", "DATA_ROOT", "RANK_ID"}
    assert child_env["HOME"] == str(home) and child_env["PYTHONUNBUFFERED"] == "1"
    assert child_env["LANG"] == "en_US.UTF-8" and child_env["DATA_ROOT"] == "/data"
    assert build_env({}, home=home, runtime_is_mindspore=False)["LC_ALL"] == "C.UTF-8"
    assert child_env["PATH"].startswith(f"{Path(PYTHON).parent}:")
    tmp_file = next(x for x in lines if x.startswith("TMP "))[4:]
    assert tmp_file.startswith(f"{home}/tmp/")


def test_mindspore_on_avx512_gets_the_avx2_isa_unless_the_user_chose() -> None:
    def isa(user: dict[str, str], *, mindspore: bool = True, avx512: bool = True) -> str | None:
        return build_env(user, home=Path("/h"), runtime_is_mindspore=mindspore,
                         cpu_has_avx512=avx512).get("ONEDNN_MAX_CPU_ISA")

    assert isa({}) == "AVX2"
    assert isa({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}) == "AVX512_CORE"
    assert isa({"DNNL_MAX_CPU_ISA": "AVX512_CORE"}) is None
    assert isa({}, avx512=False) is None
    assert isa({}, mindspore=False) is None
    detected = build_env({}, home=Path("/h"), runtime_is_mindspore=True)
    assert ("ONEDNN_MAX_CPU_ISA" in detected) == cpu.has_avx512()


def test_cpu_flags_come_from_proc_cpuinfo() -> None:
    text = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\nprocessor\t: 1\n"
    assert cpu.parse_cpu_flags(text) == {"fpu", "sse2", "avx2", "avx512f", "avx512bw"}
    assert cpu.has_avx512(cpu.parse_cpu_flags(text))
    assert not cpu.has_avx512(frozenset({"sse2", "avx2"}))
    assert not cpu.parse_cpu_flags("no flags here")
    listed = Path("/proc/cpuinfo").read_text()
    assert cpu.has_avx512() == (" avx512f" in listed)


def test_env_and_argv_refuse_what_the_platform_owns() -> None:
    for name in ("HOME", "TMPDIR", "PYTHONUNBUFFERED", "TRAINYARD_X", "BAD-NAME", ""):
        with pytest.raises(ValueError, match="cannot be set"):
            build_env({name: "x"}, home=Path("/h"), runtime_is_mindspore=False)
    assert is_reserved_env_name("TRAINYARD_ADMIN_TOKEN")
    assert not is_reserved_env_name("MY_VAR")
    assert build_argv("py", Path("t.py"), [("lr", "0.1"), ("data_url", "/d/")]) == [
        "py", "t.py", "--lr=0.1", "--data_url=/d/"]
    with pytest.raises(ValueError, match="argument name"):
        build_argv("py", Path("t.py"), [("--x", "1")])


# --- tail_lines ------------------------------------------------------------------------------

def test_tail_lines_of_a_big_file_is_fast_and_exact(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    block = b"".join(b"line %07d of a long training log\n" % i for i in range(100_000))
    with open(path, "wb") as f:
        for _ in range(15):  # ~51 MB
            f.write(block)
        f.write(b"last-but-one\nprogress 10%\rprogress 90%\rprogress 100%\nfinal")
    assert path.stat().st_size > 50_000_000
    started = time.perf_counter()
    tail = tail_lines(path, 4)
    assert time.perf_counter() - started < 0.05
    assert tail.splitlines() == ["line 0099999 of a long training log", "last-but-one",
                                 "progress 100%", "final"]
    assert len(tail_lines(path, 5000).splitlines()) == 5000


def test_tail_lines_edge_cases(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    assert tail_lines(path, 3) == ""
    path.write_bytes(b"")
    assert tail_lines(path, 3) == ""
    path.write_bytes(b"a\nb\n")
    assert tail_lines(path, 3) == "a\nb" and tail_lines(path, 1) == "b"
    assert tail_lines(path, 0) == ""
    path.write_bytes(b"x" * 1000 + b"\n\xff\xfeend\n")
    assert tail_lines(path, 5, max_bytes=100) == "\ufffd\ufffdend"  # the cut line is dropped
    assert tail_lines(path, 5) == "x" * 1000 + "\n\ufffd\ufffdend"
    path.write_bytes(b"y" * 1000)
    assert tail_lines(path, 5, max_bytes=10) == "y" * 10  # one huge line: its end


# --- pip-requirements environments -----------------------------------------------------------

def test_requirements_parsing_accepts_plain_requirements_only() -> None:
    reqs = envs.parse_requirements(
        "# training deps\n\nnumpy>=1.20  # arrays\nPillow[extra]\\\n  <13\n"
        "tomli; python_version < '3.11'\n")
    assert envs.normalise(reqs) == [
        "numpy>=1.20", "pillow[extra]<13", 'tomli; python_version < "3.11"']
    for bad, message in [
        ("-e .", "pip options like '-e'"), ("--index-url https://x/simple", "'--index-url'"),
        ("-r other.txt", "'-r'"), ("numpy==1 --hash=sha256:ab", "pip options like '--hash'"),
        ("https://x.org/pkg.whl", "URLs and paths"), ("./pkg", "URLs and paths"),
        ("pkg @ git+https://x/y", "URLs and paths"), ("numpy>>1", "not a valid requirement"),
    ]:
        with pytest.raises(envs.RequirementsError, match=message) as caught:
            envs.parse_requirements(f"six\n\n{bad}\n")
        assert "line 3" in str(caught.value)


def test_satisfied_requirements_reuse_the_runtime_python(tmp_path: Path) -> None:
    req = tmp_path / "pip-requirements.txt"
    req.write_text(f"numpy>=1.20\npsutil=={metadata.version('psutil')}\n")
    log = tmp_path / "train.log"
    python = envs.python_for_requirements(req, base_python=PYTHON, cache_dir=tmp_path / "envs",
                                          log_path=log)
    assert python == PYTHON
    assert not (tmp_path / "envs").exists()
    assert "already installed" in log.read_text()
    assert envs.python_for_requirements(tmp_path / "none.txt", base_python=PYTHON,
                                        cache_dir=tmp_path / "envs", log_path=log) == PYTHON


def test_an_unsatisfiable_requirement_fails_with_pips_words(tmp_path: Path) -> None:
    req = tmp_path / "pip-requirements.txt"
    req.write_text("definitely-not-a-package-xyz==1.0\n")
    log = tmp_path / "train.log"
    with pytest.raises(envs.RequirementsError) as caught:
        envs.python_for_requirements(req, base_python=PYTHON, cache_dir=tmp_path / "envs",
                                     log_path=log)
    message = str(caught.value)
    assert message.startswith("pip-requirements.txt: pip install failed (exit code 1):")
    assert "No matching distribution found for definitely-not-a-package-xyz==1.0" in message
    assert "No matching distribution" in log.read_text()
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == []


# Tiny dependency-free wheels on this machine's package index: (distribution, module).
INSTALLABLE = [("mergedeep", "mergedeep"), ("locket", "locket"),
               ("immutabledict", "immutabledict"), ("tomli-w", "tomli_w")]


def not_installed() -> tuple[str, str]:
    for dist, module in INSTALLABLE:
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            return dist, module
    pytest.skip("every candidate package is installed in the runtime itself")


def test_missing_requirements_get_a_cached_env_built_once(tmp_path: Path) -> None:
    dist, module = not_installed()
    req = tmp_path / "pip-requirements.txt"
    req.write_text(f"{dist}\nnumpy\n")
    log = tmp_path / "train.log"
    cache = tmp_path / "envs"

    def prepare() -> str:
        return envs.python_for_requirements(req, base_python=PYTHON, cache_dir=cache,
                                            log_path=log)

    found: list[str] = []
    threads = [threading.Thread(target=lambda: found.append(prepare())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 2 and found[0] == found[1] != PYTHON
    python = found[0]
    assert Path(python).parent.parent.parent == cache
    text = log.read_text()
    assert text.count("installing into a new environment") == 1
    assert text.count("using the environment") == 1
    assert f"Successfully installed {dist}" in text
    marker = Path(python).parent.parent / envs.MARKER_FILE
    built_at = marker.stat().st_mtime_ns
    started = time.monotonic()
    assert prepare() == python
    assert time.monotonic() - started < 2.0
    assert marker.stat().st_mtime_ns == built_at
    probe = subprocess.run([python, "-c", f"import numpy, {module}; print({module}.__file__)"
                            "; print(numpy.__file__)"], capture_output=True, text=True, check=True)
    assert probe.stdout.splitlines()[0].startswith(str(cache))
    assert probe.stdout.splitlines()[1].startswith(str(Path(PYTHON).parent.parent))
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([PYTHON, "-c", f"import {module}"], capture_output=True, check=True)
    marker.unlink()  # as if a worker died while building: the next caller rebuilds
    assert prepare() == python
    assert log.read_text().count("installing into a new environment") == 2
    assert marker.is_file()
