"""task=anomaly: next-step prediction error as an anomaly score; threshold chosen on validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rnnlab.errors import ConfigError
from rnnlab.registry import TASKS
from rnnlab.specs import positive
from rnnlab.tasks.specs import TaskConfig


@dataclass
class AnomalyTaskConfig(TaskConfig):
    name: str = "anomaly"
    monitor: str = "val/loss"  # the prediction error on normal validation steps
    mode: str = "min"
    score_window: int = 1  # the score of step t: the mean squared error over the last score_window scored steps
    baseline_windows: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # rolling z-score windows


def check(cfg: Any) -> None:
    """No backward direction (it would see the value it predicts); positive windows."""
    if cfg.model.bidirectional:
        raise ConfigError(
            "model.bidirectional=true cannot be used with task=anomaly: "
            "the backward direction would see the values it has to predict"
        )
    positive(cfg, "task.score_window")
    windows = list(cfg.task.baseline_windows or [])
    if not windows or any(int(w) < 2 for w in windows):
        raise ConfigError(f"task.baseline_windows must be a non-empty list of windows >= 2, got {windows}")


TASKS.add(
    "anomaly",
    target="rnnlab.tasks.anomaly:AnomalyTask",
    schema=AnomalyTaskConfig,
    accepts="anomaly",  # (window [W, 1], next values [W, 1], scored step)
    check=check,
    doc="next-step prediction error as anomaly score; precision, recall, F1, AUROC and a rolling z-score baseline",
)
