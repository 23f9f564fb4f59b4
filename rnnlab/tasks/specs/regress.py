"""task=regress: sequence -> real number(s) from the final hidden state, MSE loss."""

from __future__ import annotations

from dataclasses import dataclass

from rnnlab.registry import TASKS
from rnnlab.tasks.specs import TaskConfig


@dataclass
class RegressTaskConfig(TaskConfig):
    name: str = "regress"
    monitor: str = "val/mse"
    mode: str = "min"


TASKS.add(
    "regress",
    target="rnnlab.tasks.regress:RegressTask",
    schema=RegressTaskConfig,
    accepts="regression",  # (float features [T, F], one float target)
    doc="sequence -> real number(s), MSE loss; val/mse and the constant-mean baseline",
)
