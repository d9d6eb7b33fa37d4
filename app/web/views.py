"""What the pages show, derived from the services: rule states, config choices, outputs."""

from __future__ import annotations

from dataclasses import dataclass

from app.repos.schemas import RepoFile, RepoPublic
from app.trainings.runtimes import list_flavors, list_runtimes

LIMIT_MESSAGE = "A repository can have at most {limit} training instances"
RUNNING_MESSAGE = "A training is already running"


@dataclass(frozen=True)
class CreationBlock:
    """Why a new training cannot be created right now (Xihe's wording), and what to do."""

    code: str
    message: str
    hint: str
    training_id: int | None = None


def creation_block(repo: RepoPublic, *, limit: int) -> CreationBlock | None:
    """The rule that stops a new training in `repo`, or None when one may be created."""
    if repo.trainings >= limit:
        return CreationBlock("training_limit", LIMIT_MESSAGE.format(limit=limit),
                             "Delete a training to make room.")
    if repo.unfinished_training is not None:
        return CreationBlock("training_running", RUNNING_MESSAGE,
                             "Wait for it to finish or terminate it.",
                             training_id=repo.unfinished_training)
    return None


def config_files(files: list[RepoFile]) -> list[str]:
    """The repository's JSON files under `train/` (the usual home of config.json) first."""
    found = [f.path for f in files if f.path.endswith((".json", ".jsonc", ".json5"))]
    under_train = [p for p in found if p.startswith("train/")]
    preferred = "train/config.json"
    ordered = sorted(under_train, key=lambda p: (p != preferred, p))
    return ordered or sorted(found)


@dataclass(frozen=True)
class FormDefaults:
    """Starting values and suggestions for the training form."""

    framework_type: str
    framework_version: str
    instance_type: str
    framework_types: list[str]
    framework_versions: list[str]
    instance_types: list[str]


def form_defaults() -> FormDefaults:
    """The installed runtime and flavor, with every accepted name as a suggestion."""
    runtimes = list_runtimes()
    flavors = list_flavors()
    types = [r.framework_type for r in runtimes]
    types += [t for r in runtimes for t in r.legacy_framework_types]
    return FormDefaults(
        framework_type=runtimes[0].framework_type, framework_version=runtimes[0].name,
        instance_type=flavors[0].name, framework_types=list(dict.fromkeys(types)),
        framework_versions=[r.name for r in runtimes],
        instance_types=[f.name for f in flavors] + [n for f in flavors for n in f.legacy_names])

