"""task=classify: sequence -> class from the final hidden state (both directions concatenated when bidirectional)."""

from __future__ import annotations

from dataclasses import dataclass

from rnnlab.registry import TASKS
from rnnlab.tasks.specs import TaskConfig


@dataclass
class ClassifyTaskConfig(TaskConfig):
    name: str = "classify"
    monitor: str = "val/acc"
    mode: str = "max"


TASKS.add(
    "classify",
    target="rnnlab.tasks.classify:ClassifyTask",
    schema=ClassifyTaskConfig,
    accepts="classification",  # (token ids, length, label)
    doc="sequence -> class from the final hidden state; val/acc",
)
