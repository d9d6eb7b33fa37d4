"""The runtimes (frameworks) and instance types (flavors) this installation offers.

A config's `frameworks` selects a `Runtime` (which interpreter and framework run the boot
file) and its `train_instance_type` selects a `Flavor` (which Celery queue, hence which
workers, take the job). Xihe's legacy names map to what is installed here so the sample
configs work unchanged; the training then records the runtime and flavor it really got.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version

from app.config import get_settings
from app.errors import Invalid
from app.procs import sandbox
from app.procs.sandbox import Limits, SandboxState


@dataclass(frozen=True)
class Runtime:
    """A framework installation that can run a boot file."""

    name: str
    framework_type: str
    version: str
    python: str
    description: str
    legacy_framework_types: tuple[str, ...] = ()
    legacy_version_prefix: str = ""


@dataclass(frozen=True)
class Flavor:
    """An instance type: the Celery queue whose workers run the training, and its sandbox.

    `limits` are the default resource limits of its runs (TRAINYARD_SANDBOX_LIMITS overrides
    them); `network` whether its runs may open outbound connections by default
    (TRAINYARD_SANDBOX_NETWORK_FLAVORS adds flavors).
    """

    name: str
    queue: str
    description: str
    legacy_names: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    network: bool = False


def _mindspore_version() -> str | None:
    try:
        return version("mindspore")
    except PackageNotFoundError:
        return None


def _mindspore_runtime() -> Runtime:
    full = _mindspore_version()
    major_minor = ".".join(full.split(".")[:2]) if full else ""
    # Without MindSpore in this process (e.g. an API-only image) the runtime keeps a
    # version-less name; the workers that run it have the package.
    name = f"mindspore-{major_minor}-cpu" if major_minor else "mindspore-cpu"
    return Runtime(
        name=name,
        framework_type="MindSpore",
        version=full or "unknown",
        python=sys.executable,
        description=f"MindSpore {full or '(version of the worker)'} for CPU, "
        f"Python {sys.version_info.major}.{sys.version_info.minor}",
        legacy_framework_types=("MPI", "Ascend-Powered-Engine"),
        legacy_version_prefix="mindspore_",
    )


MINDSPORE_CPU = _mindspore_runtime()

CPU_STANDARD = Flavor(
    name="cpu.standard",
    queue="trainings.cpu",
    description="CPU training on any worker that consumes the trainings.cpu queue",
    legacy_names=("modelarts.p3.large.public", "modelarts.kat1.xlarge.public"),
    # Memory is the data segment of each process (the ResNet50 sample peaks at 2.4 GB);
    # threads count as processes; CPU time is left to the wall-clock limit of the training.
    limits=Limits(memory_mb=16384, processes=1024, file_size_mb=20480, open_files=4096),
)

_RUNTIMES: tuple[Runtime, ...] = (MINDSPORE_CPU,)
_FLAVORS: tuple[Flavor, ...] = (CPU_STANDARD,)


def list_runtimes() -> list[Runtime]:
    """Every runtime this installation offers."""
    return list(_RUNTIMES)


def list_flavors() -> list[Flavor]:
    """Every instance type (flavor) this installation offers."""
    return list(_FLAVORS)


def _fold(value: str) -> str:
    return value.strip().casefold()


def _accepts_type(runtime: Runtime, framework_type: str) -> bool:
    names = (runtime.framework_type, *runtime.legacy_framework_types)
    return _fold(framework_type) in {_fold(n) for n in names}


def _accepts_version(runtime: Runtime, framework_version: str) -> bool:
    given = _fold(framework_version)
    exact = {_fold(runtime.name), _fold(_family(runtime.name))}
    if runtime.version != "unknown":
        exact |= {_fold(runtime.version), _fold(".".join(runtime.version.split(".")[:2]))}
    if given in exact:
        return True
    prefix = _fold(runtime.legacy_version_prefix)
    return bool(prefix) and given.startswith(prefix) and len(given) > len(prefix)


def known_framework_types() -> list[str]:
    """Every accepted `frameworks.framework_type`, canonical names first."""
    canonical = [r.framework_type for r in _RUNTIMES]
    legacy = [t for r in _RUNTIMES for t in r.legacy_framework_types]
    return list(dict.fromkeys(canonical + legacy))


def known_framework_versions() -> list[str]:
    """A human-readable list of the accepted `frameworks.framework_version` forms."""
    out: list[str] = []
    for r in _RUNTIMES:
        out.append(r.name)
        if r.version != "unknown":
            out.append(r.version)
        if r.legacy_version_prefix:
            out.append(f"{r.legacy_version_prefix}<any version> (legacy, mapped to {r.name})")
    return out


def known_flavor_names() -> list[str]:
    """Every accepted `train_instance_type`, canonical names first."""
    return [f.name for f in _FLAVORS] + [n for f in _FLAVORS for n in f.legacy_names]


def runtime_problems(framework_type: str, framework_version: str) -> list[tuple[str, str]]:
    """`(field, message)` pairs explaining why a framework pair does not resolve (or [])."""
    typed = [r for r in _RUNTIMES if _accepts_type(r, framework_type)]
    if not typed:
        known = ", ".join(known_framework_types())
        return [("frameworks.framework_type",
                 f"unknown framework_type {framework_type!r}; known: {known}")]
    if any(_accepts_version(r, framework_version) for r in typed):
        return []
    known = "; ".join(known_framework_versions())
    return [("frameworks.framework_version",
             f"unknown framework_version {framework_version!r} for framework_type "
             f"{framework_type!r}; known: {known}")]


def flavor_problem(name: str) -> str | None:
    """Why `name` is not a known instance type, or None when it is."""
    if any(_fold(name) in {_fold(n) for n in (f.name, *f.legacy_names)} for f in _FLAVORS):
        return None
    return f"unknown train_instance_type {name!r}; known: {', '.join(known_flavor_names())}"


def resolve_runtime(framework_type: str, framework_version: str) -> Runtime:
    """The installed runtime a (possibly legacy) framework type and version map to."""
    problems = runtime_problems(framework_type, framework_version)
    if problems:
        raise Invalid("; ".join(f"{f}: {m}" for f, m in problems),
                      fields=[{"field": f, "message": m} for f, m in problems])
    return next(r for r in _RUNTIMES
                if _accepts_type(r, framework_type) and _accepts_version(r, framework_version))


def resolve_flavor(name: str) -> Flavor:
    """The instance type a (possibly legacy) `train_instance_type` maps to."""
    problem = flavor_problem(name)
    if problem is not None:
        raise Invalid(f"train_instance_type: {problem}",
                      fields=[{"field": "train_instance_type", "message": problem}])
    return next(f for f in _FLAVORS if _fold(name) in {_fold(n) for n in (f.name, *f.legacy_names)})


def _family(name: str) -> str:
    return re.sub(r"-\d+(?:\.\d+)*(?=-|$)", "", name)


def get_runtime(name: str) -> Runtime:
    """The runtime recorded under `name` on a training; another version of it if upgraded."""
    exact = [r for r in _RUNTIMES if r.name == name]
    # A training queued before an upgrade (or by an API process without MindSpore, which
    # records the version-less name) runs on this worker's version of the same runtime.
    same_family = [r for r in _RUNTIMES if _family(r.name) == _family(name)]
    for runtime in exact or same_family:
        return runtime
    known = ", ".join(r.name for r in _RUNTIMES)
    message = f"unknown runtime {name!r}; this installation has: {known}"
    raise Invalid(message, fields=[{"field": "runtime", "message": message}])


def get_flavor(name: str) -> Flavor:
    """The instance type recorded under `name` on a training (legacy names too)."""
    return resolve_flavor(name)


def sandbox_limits(flavor: Flavor) -> Limits:
    """The limits of a flavor's runs: its defaults, with TRAINYARD_SANDBOX_LIMITS on top."""
    override = get_settings().sandbox_limits.get(flavor.name, {})
    return replace(flavor.limits, **override)


def sandbox_network(flavor: Flavor) -> bool:
    """Whether a flavor's runs may open outbound connections."""
    return flavor.network or flavor.name in get_settings().sandbox_network_flavors


def sandbox_state() -> SandboxState:
    """Whether user code runs sandboxed on this installation, and why not (health, pages)."""
    return sandbox.state()
