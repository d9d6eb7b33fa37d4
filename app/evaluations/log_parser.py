"""Metrics from a training log: MindSpore LossMonitor-style and accuracy lines, split into runs.

Recognised (case and spacing are free, brackets optional; of `loss:[x/y]` the step's loss x
is kept, not the running mean y):
    Epoch:[  1/ 30], step:[   10/  390], loss:[2.301/2.305], time: 812.345 ms, lr: 0.00100
    epoch: 1 step: 10, loss is 2.3025
    Epoch: [1/30], Train Loss: [1.9], Accuracy: 0.4123
A new run starts wherever the epoch number goes down (a script that trains several times).
"""

from __future__ import annotations

import re
from typing import Any

from app.evaluations.series import RunData

_NUM = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf))"
_EPOCH = r"\bepoch\s*:?\s*\[?\s*(\d+)(?:\s*/\s*(\d+))?\s*\]?[\s,;]*"
LOSS_RE = re.compile(_EPOCH + r"step\s*:?\s*\[?\s*(\d+)(?:\s*/\s*(\d+))?\s*\]?[\s,;]*"
                     r"loss(?:\s+is)?\s*:?\s*\[?\s*" + _NUM + r"(?:\s*/\s*" + _NUM + r")?",
                     re.IGNORECASE)
ACCURACY_RE = re.compile(_EPOCH + r"(?:train(?:ing)?[\s_]*loss\s*:?\s*\[?\s*" + _NUM
                         + r"\s*\]?[\s,;]*)?(?:accuracy|acc)\s*:?\s*\[?\s*" + _NUM,
                         re.IGNORECASE)
TIME_RE = re.compile(r"\btime\s*:?\s*\[?\s*" + _NUM + r"\s*(ms|s)?\b", re.IGNORECASE)
LR_RE = re.compile(r"\blr\s*:?\s*\[?\s*" + _NUM, re.IGNORECASE)

TRAIN = {"subset": "train"}
TEST = {"subset": "test"}


class LogParser:
    """Turns log text, fed in pieces as it grows, into runs of metric series."""

    def __init__(self, *, run_name: str, params: dict[str, Any] | None = None) -> None:
        self.run_name = run_name
        self.params = dict(params or {})
        self.runs: list[RunData] = []
        self._pending = ""
        self._last_epoch = 0
        self._step_base = 0       # global step of the current epoch's step 0
        self._base_epoch = 0      # the epoch `_step_base` belongs to
        self._epoch_max_step = 0  # last step seen in `_base_epoch`

    def feed(self, text: str) -> None:
        """Parse every complete line of `text` (a trailing partial line waits for more)."""
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self.feed_line(line)

    def finish(self) -> list[RunData]:
        """Parse what is left (a last line without newline) and return the runs."""
        if self._pending:
            self.feed_line(self._pending)
            self._pending = ""
        return self.runs

    def feed_line(self, line: str) -> None:
        """Parse one line."""
        if "poch" not in line and "POCH" not in line:
            return
        match = LOSS_RE.search(line)
        if match is not None:
            self._loss_line(match, line[match.end():])
            return
        match = ACCURACY_RE.search(line)
        if match is not None:
            self._accuracy_line(match)

    def _run_for(self, epoch: int) -> RunData:
        if not self.runs or epoch < self._last_epoch:
            index = len(self.runs) + 1
            name = self.run_name if index == 1 else f"{self.run_name} #{index}"
            self.runs.append(RunData(name=name, params=dict(self.params)))
            self._step_base = self._base_epoch = self._epoch_max_step = 0
        self._last_epoch = epoch
        return self.runs[-1]

    def _global_step(self, epoch: int, step: int, steps_per_epoch: int | None) -> int:
        if steps_per_epoch:
            return (epoch - 1) * steps_per_epoch + step
        # Without a total, each epoch continues where the previous one's last step ended.
        if epoch != self._base_epoch:
            self._step_base += self._epoch_max_step
            self._base_epoch = epoch
            self._epoch_max_step = 0
        self._epoch_max_step = max(self._epoch_max_step, step)
        return self._step_base + step

    def _loss_line(self, match: re.Match[str], rest: str) -> None:
        epoch, step = int(match[1]), int(match[3])
        total = int(match[4]) if match[4] else None
        run = self._run_for(epoch)
        at = self._global_step(epoch, step, total)
        run.track("loss", float(match[5]), step=at, epoch=epoch, context=TRAIN)
        time = TIME_RE.search(rest)
        if time is not None:
            ms = float(time[1]) * (1000.0 if (time[2] or "ms").lower() == "s" else 1.0)
            run.track("step_time_ms", ms, step=at, epoch=epoch, context=TRAIN)
        lr = LR_RE.search(rest)
        if lr is not None:
            run.track("lr", float(lr[1]), step=at, epoch=epoch, context=TRAIN)

    def _accuracy_line(self, match: re.Match[str]) -> None:
        epoch = int(match[1])
        run = self._run_for(epoch)
        if match[3] is not None:
            run.track("epoch_loss", float(match[3]), step=epoch, epoch=epoch, context=TRAIN)
        run.track("accuracy", float(match[4]), step=epoch, epoch=epoch, context=TEST)


def parse_log(text: str, *, run_name: str, params: dict[str, Any] | None = None) -> list[RunData]:
    """Every run found in a whole log."""
    parser = LogParser(run_name=run_name, params=params)
    parser.feed(text)
    return parser.finish()
