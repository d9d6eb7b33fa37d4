"""Metric series and runs: what a log parse or an Aim repo yields, and what charts show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Series:
    """One metric of one run: `name` in `context`, values by step (and epoch when known)."""

    name: str
    context: dict[str, Any]
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    epochs: list[int | None] = field(default_factory=list)

    def add(self, step: int, value: float, epoch: int | None) -> None:
        """Append one point."""
        self.steps.append(step)
        self.values.append(value)
        self.epochs.append(epoch)

    def to_json(self) -> dict[str, Any]:
        """The series as plain JSON (NaN and infinities become null)."""
        return {"name": self.name, "context": self.context, "steps": self.steps,
                "values": [v if v == v and abs(v) != float("inf") else None
                           for v in self.values],
                "epochs": self.epochs}


@dataclass
class RunData:
    """A run: a name, its parameters and its series (keyed by name and context)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    series: dict[tuple[str, str], Series] = field(default_factory=dict)

    def track(self, name: str, value: float, *, step: int, epoch: int | None,
              context: dict[str, Any]) -> None:
        """Append a point to the series `name` in `context`, creating it on first use."""
        key = (name, repr(sorted(context.items())))
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = Series(name=name, context=dict(context))
        found.add(step, value, epoch)

    def to_json(self) -> dict[str, Any]:
        """The run as plain JSON."""
        return {"name": self.name, "params": self.params,
                "series": [s.to_json() for s in self.series.values()]}
