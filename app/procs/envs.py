"""Python environments for trainings that ship a `pip-requirements.txt` beside their boot file.

Contract of `python_for_requirements(requirements_file, base_python=..., cache_dir=...,
log_path=...)`, which returns the path of the interpreter to run the training with:
1. No file, or a file with no requirements: the runtime's own interpreter, unchanged.
2. The file is parsed as one PEP 508 requirement per line (comments, blank lines and `\\`
   continuations allowed). pip options (`-e`, `-r`, `--index-url`, `--hash` ...), URLs and
   paths are refused with a `RequirementsError` naming the line.
3. Requirements already satisfied in the runtime interpreter (checked inside it, with
   `importlib.metadata` and `packaging`, markers and extras included): its interpreter, unchanged.
4. Otherwise a virtualenv cached at ``cache_dir/<key>`` (key: sha256 of the runtime interpreter
   and the normalised requirements) is built once and reused. It sees every package of the
   runtime (a .pth file adds the runtime's site dirs, which also works when the runtime is itself
   a venv, where --system-site-packages would not), and the requirements installed into it take
   precedence. pip uses the machine's configured indexes and find-links. A file lock keeps two
   workers from building the same env; the env is built in place (a venv cannot be moved: its
   scripts hold absolute paths) and marked complete last, so a half-built one is never used and
   is rebuilt by the next caller.
5. pip's output is appended to the training log. A failure raises `RequirementsError` whose
   message, ending with pip's last lines, is meant to be the training's Failed reason.
6. `sandboxed=True` (the platform's sandbox is on): no code of the chosen packages runs outside
   the sandbox. The platform resolves and downloads binary wheels only (`--only-binary=:all:`:
   resolving, downloading and unpacking wheels runs no package code), then pip installs them
   offline (`--no-index --no-deps`, the exact pins it resolved) inside a sandbox with no
   network that can write only the new env; the final check, which starts the env's
   interpreter and so runs any .pth file a package planted, runs in a sandbox too. A package
   that ships only a source distribution cannot be installed then (the error says so). The
   finished env is owned by the platform and read-only to runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from filelock import FileLock, Timeout
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from app.procs import sandbox as sandboxing
from app.procs import supervise
from app.procs.environ import BASE_PATH
from app.procs.logfiles import log_note, tail_lines
from app.procs.tree import kill_process_tree

REQUIREMENTS_FILE = "pip-requirements.txt"
MARKER_FILE = "trainyard-env.json"
MAX_REQUIREMENTS = 200
PIP_TAIL_LINES = 15
_COMMENT = re.compile(r"(^|\s)#.*$")
_PASSED_TO_PIP = re.compile(
    r"PIP_\w+|(?i:https?_proxy|no_proxy|all_proxy)|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE"
    r"|XDG_CONFIG_HOME|XDG_CONFIG_DIRS|XDG_CACHE_HOME|HOME"
)

# Runs inside the target interpreter (`python -I -c`): reads requirement strings on stdin and
# prints which are not satisfied, its identity and its site dirs, as JSON.
_CHECKER = r"""
import json, site, sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

def missing(req, extra, depth):
    if req.marker is not None and not req.marker.evaluate({"extra": extra}):
        return None
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return f"{req.name} is not installed"
    if not req.specifier.contains(version, prereleases=True):
        return f"{req.name} {version} is installed but {req} is required"
    for wanted in sorted(req.extras) if depth < 5 else ():
        for dep in metadata.requires(req.name) or ():
            why = missing(Requirement(dep), wanted, depth + 1)
            if why:
                return f"{req}: {why}"
    return None

found = [missing(Requirement(line), "", 0) for line in json.load(sys.stdin)]
print(json.dumps({"missing": [w for w in found if w], "prefix": sys.prefix,
                  "version": sys.version, "site_dirs": site.getsitepackages()}))
"""


class RequirementsError(Exception):
    """The requirements of a training cannot be parsed or installed; str() says why."""


@dataclass(frozen=True)
class _Check:
    missing: list[str]
    prefix: str
    version: str
    site_dirs: list[str]


def parse_requirements(text: str) -> list[Requirement]:
    """Parse a pip-requirements.txt: plain PEP 508 requirements only, errors name the line."""
    reqs: list[Requirement] = []
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        start, line = number + 1, lines[number]
        number += 1
        while line.endswith("\\") and number < len(lines):
            line, number = line[:-1] + lines[number], number + 1
        line = _COMMENT.sub("", line).strip()
        if not line:
            continue
        where = f"{REQUIREMENTS_FILE} line {start}"
        option = next((t for t in line.split() if t.startswith("-")), None)
        if option is not None:
            raise RequirementsError(
                f"{where}: pip options like {option.split('=')[0]!r} are not supported; "
                "list one requirement per line, like 'numpy>=1.24'"
            )
        if "://" in line or line.startswith((".", "/", "~")):
            raise RequirementsError(f"{where}: URLs and paths are not supported: {line!r}; "
                                    "name a package from the package index")
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise RequirementsError(f"{where}: {line!r} is not a valid requirement: {exc}") from exc
        if req.url:
            raise RequirementsError(f"{where}: direct references ('name @ url') are not "
                                    "supported; name a package from the package index")
        reqs.append(req)
    if len(reqs) > MAX_REQUIREMENTS:
        raise RequirementsError(f"{REQUIREMENTS_FILE} lists {len(reqs)} requirements; "
                                f"at most {MAX_REQUIREMENTS} are allowed")
    return reqs


def normalise(reqs: list[Requirement]) -> list[str]:
    """Requirements as sorted, de-duplicated strings with canonical names (the cache key)."""
    out = set()
    for req in reqs:
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        marker = f"; {req.marker}" if req.marker else ""
        out.add(f"{canonicalize_name(req.name)}{extras}{req.specifier}{marker}")
    return sorted(out)


def python_for_requirements(
    requirements_file: Path,
    *,
    base_python: str,
    cache_dir: Path,
    log_path: Path,
    timeout_s: float = 1800.0,
    sandboxed: bool = False,
) -> str:
    """The interpreter to run a training with, given the pip-requirements.txt beside its code."""
    if not requirements_file.is_file():
        return base_python
    text = requirements_file.read_text(encoding="utf-8", errors="replace")
    reqs = normalise(parse_requirements(text))
    if not reqs:
        return base_python
    check = _check(base_python, reqs)
    if not check.missing:
        log_note(log_path, f"{REQUIREMENTS_FILE}: every requirement is already installed")
        return base_python
    identity = {"python": os.path.abspath(base_python), "prefix": check.prefix,
                "version": check.version, "requirements": reqs}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    env_dir = cache_dir / key
    python = str(env_dir / "bin" / "python")
    if (env_dir / MARKER_FILE).is_file():
        log_note(log_path, f"{REQUIREMENTS_FILE}: using the environment {env_dir}")
        return python
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(cache_dir / f"{key}.lock", timeout=timeout_s):
            if (env_dir / MARKER_FILE).is_file():
                log_note(log_path, f"{REQUIREMENTS_FILE}: using the environment {env_dir}")
                return python
            log_note(log_path, f"{REQUIREMENTS_FILE}: {'; '.join(check.missing)}; "
                     f"installing into a new environment {env_dir}")
            try:
                _build(env_dir, base_python, check, reqs, log_path, timeout_s, sandboxed)
            except BaseException:
                shutil.rmtree(env_dir, ignore_errors=True)
                raise
            (env_dir / ".marker.tmp").write_text(json.dumps(
                {**identity, "created_at": time.time()}, indent=1))
            os.replace(env_dir / ".marker.tmp", env_dir / MARKER_FILE)
    except Timeout as exc:
        raise RequirementsError(f"{REQUIREMENTS_FILE}: another worker has been building the "
                                f"same environment for over {timeout_s:g} s") from exc
    return python


def _build(env_dir: Path, base_python: str, check: _Check, reqs: list[str], log_path: Path,
           timeout_s: float, sandboxed: bool) -> None:
    if env_dir.exists():
        shutil.rmtree(env_dir)  # left half-built by a worker that died
    venv = subprocess.run([base_python, "-m", "venv", "--without-pip", str(env_dir)],
                          capture_output=True, text=True, env=_pip_env(), timeout=120)
    if venv.returncode != 0:
        raise RequirementsError(f"{REQUIREMENTS_FILE}: cannot create a virtualenv: "
                                f"{(venv.stderr or venv.stdout).strip()[-2000:]}")
    python = str(env_dir / "bin" / "python")
    query = [python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    site_dir = subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})\n" for d in check.site_dirs]
    Path(site_dir, "_trainyard_runtime.pth").write_text("".join(lines))
    if sandboxed:
        still = _install_sandboxed(env_dir, base_python, python, reqs, log_path, timeout_s)
    else:
        _run_pip(_pip_command(python, "install", *reqs), log_path, timeout_s)
        still = _check(python, reqs).missing
    if still:
        raise RequirementsError(f"{REQUIREMENTS_FILE}: installed, yet {'; '.join(still)}")


def _install_sandboxed(env_dir: Path, base_python: str, python: str, reqs: list[str],
                       log_path: Path, timeout_s: float) -> list[str]:
    """Download wheels outside, install them offline in a sandbox; what is still missing."""
    wheels = env_dir.with_name(f".{env_dir.name}.wheels")
    try:
        pins = _download_wheels(python, reqs, wheels, log_path, timeout_s)
        spec = sandboxing.SandboxSpec(cwd=env_dir, pythons=(sys.executable, base_python, python),
                                      ro_paths=(wheels,), rw_paths=(env_dir,))
        sandboxing.make_writable(env_dir)
        try:
            _run_pip(_pip_command(python, "install", "--no-index", "--no-deps", "--no-cache-dir",
                                  "--find-links", str(wheels), *pins),
                     log_path, timeout_s, sandbox=spec)
        finally:
            sandboxing.take_back(env_dir)
        read_only = replace(spec, ro_paths=(wheels, env_dir), rw_paths=())
        return _check(python, reqs, sandbox=read_only).missing
    finally:
        shutil.rmtree(wheels, ignore_errors=True)


def _pip_command(python: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--python", python, *args[:1], "--no-input",
            "--progress-bar", "off", "--disable-pip-version-check", *args[1:]]


def _download_wheels(python: str, reqs: list[str], wheels: Path, log_path: Path,
                     timeout_s: float) -> list[str]:
    """Resolve `reqs` for the env to binary wheels and download them; the exact pins."""
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    report = wheels / "report.json"
    _run_pip(_pip_command(python, "install", "--dry-run", "--only-binary=:all:", "--quiet",
                          "--report", str(report), *reqs), log_path, timeout_s, binary_only=True)
    chosen = json.loads(report.read_text()).get("install", [])
    report.unlink()
    pins = [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in chosen]
    if pins:
        _run_pip(_pip_command(python, "download", "--no-deps", "--only-binary=:all:", "--quiet",
                              "--dest", str(wheels), *pins), log_path, timeout_s,
                 binary_only=True)
    return pins


def _run_pip(command: list[str], log_path: Path, timeout_s: float, *,
             sandbox: sandboxing.SandboxSpec | None = None, binary_only: bool = False) -> None:
    """Run pip, output into the log; raise RequirementsError with its last lines if it fails."""
    start = log_path.stat().st_size if log_path.exists() else 0
    env = _pip_env() if sandbox is None else _sandbox_env()
    with open(log_path, "ab", buffering=0) as log:
        if sandbox is None:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        else:
            proc = supervise.start(command, cwd=sandbox.cwd, env=env, stdout=log, grace_s=5.0,
                                   sandbox=sandbox)
    code: int | None
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            kill_process_tree(proc.pid, 5.0)
            proc.wait()
    if code == 0:
        return
    size = log_path.stat().st_size
    tail = tail_lines(log_path, PIP_TAIL_LINES, max_bytes=max(size - start, 0))
    why = "timed out" if code is None else f"failed (exit code {code})"
    hint = ("\n(the sandbox installs binary wheels only: a package published only as source "
            "cannot be installed)") if binary_only else ""
    raise RequirementsError(f"{REQUIREMENTS_FILE}: pip install {why}:\n{tail}{hint}")


def _check(python: str, reqs: list[str], *,
           sandbox: sandboxing.SandboxSpec | None = None) -> _Check:
    """Which requirements the interpreter lacks, and where its packages live."""
    command = [python, "-I", "-c", _CHECKER]
    env = _pip_env()
    if sandbox is not None:
        command, env = sandboxing.wrap(command, sandbox), _sandbox_env()
    try:
        done = subprocess.run(command, input=json.dumps(reqs), capture_output=True, text=True,
                              env=env, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RequirementsError(f"cannot run the interpreter {python}: {exc}") from exc
    if done.returncode != 0:
        raise RequirementsError(f"cannot check the requirements with {python}: "
                                f"{done.stderr.strip()[-2000:]}")
    data = json.loads(done.stdout)
    return _Check(data["missing"], data["prefix"], data["version"], data["site_dirs"])


def _sandbox_env() -> dict[str, str]:
    """The environment of pip and of the check inside the sandbox: nothing of the platform's."""
    return {"PATH": BASE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1",
            "HOME": "/tmp", "TMPDIR": "/tmp"}


def _pip_env() -> dict[str, str]:
    """A minimal environment for pip: the machine's pip settings, proxies and certificates."""
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    env.update({k: v for k, v in os.environ.items() if _PASSED_TO_PIP.fullmatch(k)})
    return env
