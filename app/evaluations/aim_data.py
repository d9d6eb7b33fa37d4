"""Read runs out of an Aim repository and write runs into one, through Aim's SDK."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from app.evaluations.series import RunData, Series

AIM_DIR = ".aim"


def is_aim_repo(folder: Path) -> bool:
    """True when `folder` holds an Aim repository (a `.aim` directory)."""
    return (folder / AIM_DIR).is_dir()


def _attrs(run: Any) -> dict[str, Any]:
    try:
        attrs = run.meta_run_tree.collect("attrs")
    except KeyError:
        return {}
    return {k: v for k, v in attrs.items() if not str(k).startswith("__")}


def read_runs(folder: Path) -> list[RunData]:
    """Every run of the Aim repository in `folder` with its params and metric series."""
    from aim.sdk.repo import ContainerConfig, Repo
    from aim.storage.union import RocksUnionContainer

    repo = Repo.from_path(str(folder))
    # Read run metadata from every run's own chunk, not only from the index: runs enter the
    # index only when an Aim UI indexes them, and a running training's runs never have.
    union = RocksUnionContainer(str(Path(repo.path) / "meta"), read_only=True)
    repo.container_pool[ContainerConfig("meta", None, True)] = union
    runs: list[RunData] = []
    try:
        for run in repo.iter_runs():
            data = RunData(name=run.name or run.hash, params=_attrs(run))
            for metric in run.metrics():
                if metric.name.startswith("__system__"):
                    continue
                steps, (values, epochs, _times) = metric.data.items_list()
                context = metric.context.to_dict()
                data.series[(metric.name, repr(sorted(context.items())))] = Series(
                    name=metric.name, context=context, steps=[int(s) for s in steps],
                    values=[float(v) for v in values],
                    epochs=[None if e is None or math.isnan(e) else int(e) for e in epochs])
            runs.append(data)
    finally:
        repo.close()
    return runs


def _points(data: RunData) -> list[tuple[int, int | None, dict[str, Any], dict[str, float]]]:
    # One track() call per (context, step) with every metric of that step: Aim's cost is
    # mostly per call, so this is several times faster than a call per value.
    grouped: dict[tuple[str, int], tuple[int, int | None, dict[str, Any], dict[str, float]]] = {}
    for series in data.series.values():
        ctx_key = repr(sorted(series.context.items()))
        for step, value, epoch in zip(series.steps, series.values, series.epochs, strict=True):
            if not math.isfinite(value):
                continue
            point = grouped.setdefault((ctx_key, step), (step, epoch, series.context, {}))
            point[3][series.name] = value
    return list(grouped.values())


def write_runs(folder: Path, runs: list[RunData], *, experiment: str,
               extra_params: dict[str, Any] | None = None) -> None:
    """Track `runs` into the existing Aim repository in `folder` (non-finite values skipped)."""
    from aim.sdk.run import Run

    for data in runs:
        run = Run(repo=str(folder), experiment=experiment, system_tracking_interval=None,
                  capture_terminal_logs=False, log_system_params=False)
        try:
            run.name = data.name
            for key, value in {**data.params, **(extra_params or {})}.items():
                run[key] = value
            for step, epoch, context, values in _points(data):
                run.track(values, step=step, epoch=epoch, context=context)
        finally:
            run.close()
