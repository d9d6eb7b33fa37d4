"""What an evaluation shows: the subject (a training or a repository), where its Aim repository
is, and the recipe the Aim process follows to build one from logs and other repositories."""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from app import safe_files, storage
from app.errors import Conflict, Invalid
from app.evaluations.aim_data import AIM_DIR
from app.evaluations.aim_process import evaluations_root
from app.evaluations.log_parser import LogParser
from app.models import Evaluation, Repository, Training
from app.trainings.outputs import output_dirs

BUILD_FORMAT = 1  # bump when the way logs become runs changes: rebuilds every repository
LOG_SNIFF_BYTES = 4 * 1024 * 1024
USER_METRICS_QUERY = 'not metric.name.startswith("__system__")'
# What JavaScript's encodeURI leaves alone (Aim's UI encodes its URL state with it).
_ENCODE_URI_SAFE = ";,/?:@&=+$-_.!~*'()#"


def aim_state(value: dict[str, Any]) -> str:
    """Aim UI's URL encoding of explorer state: "O-" + url-safe base64 of encodeURI(JSON)."""
    text = quote(json.dumps(value, separators=(",", ":")), safe=_ENCODE_URI_SAFE)
    return "O-" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@dataclass(frozen=True)
class Subject:
    """A training (its custom or standard evaluation) or a repository (comparing trainings)."""

    kind: str  # training | repo
    id: int
    base_path: str  # where the Aim UI is served, e.g. /trainings/5/aim
    workdir: Path   # Trainyard's files of this evaluation: aim.log

    @property
    def url(self) -> str:
        """The report's URL (a path on this server)."""
        return self.base_path + "/"

    @property
    def report_url(self) -> str:
        """Aim's metrics explorer with every tracked metric charted, one chart per name."""
        select = aim_state({"options": [], "query": "", "advancedMode": True,
                            "advancedQuery": USER_METRICS_QUERY})
        return f"{self.base_path}/metrics?select={select}"

    @property
    def log(self) -> Path:
        """The Aim process's output."""
        return self.workdir / "aim.log"

    def matches(self, row: Evaluation) -> bool:
        """True when `row` is this subject's evaluation."""
        if self.kind == "training":
            return row.training_id == self.id
        return row.repo_id == self.id


def training_subject(training_id: int) -> Subject:
    """The evaluation subject of one training (files under the training dir, not the workspace)."""
    return Subject("training", training_id, f"/trainings/{training_id}/aim",
                   storage.training_dir(training_id) / "evaluation")


def repo_subject(repo: Repository) -> Subject:
    """The comparison of a repository's trainings."""
    return Subject("repo", repo.id, f"/repos/{repo.owner.username}/{repo.name}/aim",
                   repo_workdir(repo.id))


def repo_workdir(repo_id: int) -> Path:
    """Trainyard's files of a repository's comparison."""
    return evaluations_root() / f"repo-{repo_id}"


def _search_roots(training: Training) -> list[tuple[str, PurePosixPath]]:
    roots = [("the workspace root", PurePosixPath("."))]
    code_dir = str(training.config.get("code_dir") or "").strip("/")
    if code_dir:
        roots.append((f"the code folder {code_dir}/", PurePosixPath(code_dir)))
    roots += [(f"the output {name} ({rel}/)", rel) for name, rel in output_dirs(training)]
    return roots


def _is_safe_aim_repo(workspace: Path, rel: PurePosixPath, *, field: str) -> bool:
    """True when `rel/.aim` is a folder reached and filled without links; an Aim repository
    holding a link or special file is refused (422 naming it), since Aim would follow it."""
    try:
        if not stat.S_ISDIR(safe_files.lstat_at(workspace, rel / AIM_DIR, field=field).st_mode):
            return False
    except (FileNotFoundError, NotADirectoryError):
        return False
    safe_files.check_tree(workspace, rel / AIM_DIR, field=field)
    return True


def resolve_aim_path(training: Training, aim_path: str) -> Path:
    """The folder holding `.aim` that `aim_path` names, relative to the workspace root, the code
    folder, then each output folder; never outside the workspace, never through a link."""
    raw = aim_path.strip()
    rel: PurePosixPath | None = None
    if raw.rstrip("/") not in ("", "."):
        rel = storage.relative_path(raw, field="aim_path")
        if rel.name == AIM_DIR:
            rel = rel.parent
    workspace = storage.training_workspace(training.id).resolve()
    looked = []
    for label, root in _search_roots(training):
        target = root / rel if rel is not None else root
        if _is_safe_aim_repo(workspace, target, field="aim_path"):
            return workspace / target
        looked.append(label)
    raise Conflict(f"no Aim repository (a folder holding '.aim') at '{aim_path}' in training "
                   f"{training.id}: looked relative to {', '.join(looked)}; give the folder "
                   "your code passed to aim.Run(repo=...)", code="aim_repo_not_found")


def find_aim_repo(training: Training, aim_path: str | None = None) -> Path | None:
    """The training's own Aim repository: at `aim_path` if given, else the first `.aim` found
    up to two levels below the code and output folders (links neither followed nor used)."""
    if aim_path:
        try:
            return resolve_aim_path(training, aim_path)
        except (Conflict, Invalid):
            return None
    workspace = storage.training_workspace(training.id).resolve()
    for _label, root in reversed(_search_roots(training)[1:]):
        try:
            nodes = [n for n in safe_files.walk(workspace, root, max_depth=3)
                     if n.is_dir and n.refused is None and n.path.name == AIM_DIR
                     and len(n.path.relative_to(root).parts) <= 3
                     and not any(p.startswith(".") for p in n.path.relative_to(root).parts[:-1])]
        except (FileNotFoundError, NotADirectoryError, safe_files.UnsafePath):
            continue
        for node in nodes:
            try:
                if _is_safe_aim_repo(workspace, node.path.parent, field="aim_path"):
                    return workspace / node.path.parent
            except safe_files.UnsafePath:
                continue
    return None


def hyperparameters(training: Training) -> dict[str, Any]:
    """The training's hyperparameters, numbers as numbers."""
    out: dict[str, Any] = {}
    for item in training.config.get("hypeparameters") or []:
        value = str(item.get("value", ""))
        for kind in (int, float):
            try:
                out[item["name"]] = kind(value)
                break
            except ValueError:
                continue
        else:
            out[item["name"]] = value
    return out


def log_has_metrics(training: Training) -> bool:
    """True when the first megabytes of the training's log hold a metric line."""
    try:
        fd, _info = safe_files.open_file(storage.training_dir(training.id),
                                         storage.training_log(training.id).name)
    except (OSError, safe_files.UnsafePath):
        return False
    with os.fdopen(fd, "rb") as f:
        head = f.read(LOG_SNIFF_BYTES).decode("utf-8", errors="replace")
    parser = LogParser(run_name="probe")
    parser.feed(head)
    return bool(parser.finish())


def _trainyard_params(training: Training) -> dict[str, Any]:
    return {"trainyard": {"training_id": training.id, "job_name": training.job_name,
                          "repo": training.repo.full_name, "status": training.status,
                          "hyperparameters": hyperparameters(training)}}


def _fingerprint(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def log_source(training: Training) -> dict[str, Any]:
    """Build step: parse the training's log into runs with its hyperparameters."""
    return {"kind": "log", "path": str(storage.training_log(training.id)),
            "run_name": training.job_name, "params": {"hparams": hyperparameters(training)},
            "extra": _trainyard_params(training)}


def aim_source(training: Training, folder: Path) -> dict[str, Any]:
    """Build step: copy the runs of the training's own Aim repository."""
    return {"kind": "aim", "path": str(folder), "run_name": training.job_name,
            "extra": _trainyard_params(training)}


def build_spec(sources: list[dict[str, Any]], *, experiment: str) -> dict[str, Any]:
    """The build recipe, with a fingerprint that changes when any source does."""
    prints: list[Any] = [BUILD_FORMAT]
    for source in sources:
        path = Path(source["path"])
        target = path / AIM_DIR / "run_metadata.sqlite" if source["kind"] == "aim" else path
        prints.append([source["kind"], source["extra"]["trainyard"]["training_id"],
                       *_fingerprint(target)])
    return {"fingerprint": prints, "experiment": experiment, "sources": sources}
