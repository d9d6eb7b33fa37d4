"""A training's metric series for native charts, while it runs and after.

From the training's own Aim repository when it has one (read with Aim's SDK), else parsed from
its log. Both are cached: the log parse grows with the log, the Aim read is redone only when
the repository's files change.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app import storage
from app.evaluations import sources
from app.evaluations.aim_data import AIM_DIR, read_runs
from app.evaluations.log_parser import LogParser
from app.evaluations.schemas import MetricSeriesPublic, MetricsPublic, RunPublic
from app.evaluations.series import RunData, Series
from app.models import Training

CACHE_SIZE = 32
K = TypeVar("K")
V = TypeVar("V")


@dataclass
class _LogState:
    parser: LogParser
    offset: int
    inode: int


_lock = threading.RLock()
_logs: OrderedDict[int, _LogState] = OrderedDict()
_aims: OrderedDict[str, tuple[tuple[int, int], list[RunData]]] = OrderedDict()


def _remember(cache: OrderedDict[K, V], key: K, value: V) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


def log_runs(training: Training) -> list[RunData]:
    """The runs in the training's log, parsing only what was appended since the last call."""
    path = storage.training_log(training.id)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return []
    with _lock:
        state = _logs.get(training.id)
        if state is None or state.inode != stat.st_ino or stat.st_size < state.offset:
            state = _LogState(LogParser(run_name=training.job_name,
                                        params={"hparams": sources.hyperparameters(training)}),
                              0, stat.st_ino)
        with path.open("rb") as f:
            f.seek(state.offset)
            data = f.read()
        # Whole lines only (a line being written waits), unless the log is final.
        end = len(data) if training.state.finished else data.rfind(b"\n") + 1
        state.parser.feed(data[:end].decode("utf-8", errors="replace"))
        if training.state.finished:
            state.parser.finish()
        state.offset += end
        _remember(_logs, training.id, state)
        return list(state.parser.runs)


def _aim_fingerprint(folder: Path) -> tuple[int, int]:
    count, newest = 0, 0
    for root, dirs, files in os.walk(folder / AIM_DIR):
        dirs[:] = [d for d in dirs if d not in ("locks", "check_ins")]
        for name in files:
            try:
                newest = max(newest, (Path(root) / name).stat().st_mtime_ns)
            except FileNotFoundError:
                continue
            count += 1
    return count, newest


def aim_runs(folder: Path) -> list[RunData]:
    """The runs of an Aim repository, re-read only when its files changed."""
    key = str(folder)
    fingerprint = _aim_fingerprint(folder)
    with _lock:
        cached = _aims.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        runs = read_runs(folder)
        _remember(_aims, key, (fingerprint, runs))
        return runs


def _thin(series: Series, max_points: int) -> Series:
    if len(series.steps) <= max_points:
        return series
    stride = -(-len(series.steps) // max_points)
    keep = list(range(0, len(series.steps), stride))
    if keep[-1] != len(series.steps) - 1:
        keep.append(len(series.steps) - 1)
    return Series(series.name, series.context, [series.steps[i] for i in keep],
                  [series.values[i] for i in keep], [series.epochs[i] for i in keep])


def training_metrics(training: Training, *, aim_path: str | None,
                     max_points: int) -> MetricsPublic:
    """The training's series: Aim repository if it has one, else its log."""
    folder = sources.find_aim_repo(training, aim_path)
    source = "aim" if folder is not None else "log"
    with _lock:  # the cached runs grow under other requests' feet otherwise
        runs = aim_runs(folder) if folder is not None else log_runs(training)
        series = [MetricSeriesPublic(run=run.name, **_thin(s, max_points).to_json())
                  for run in runs for s in run.series.values()]
        workspace = storage.training_workspace(training.id).resolve()
        return MetricsPublic(training_id=training.id, status=training.status,
                             source=source if runs else "none",
                             aim_repo=(folder.relative_to(workspace).as_posix() + "/"
                                       if folder is not None else None),
                             runs=[RunPublic(name=r.name, params=r.params) for r in runs],
                             series=series)
