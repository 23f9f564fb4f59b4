"""task=forecast: a window of a series -> the next ``data.horizon`` values of the target (direct multi-step)."""

from __future__ import annotations

from dataclasses import dataclass

from rnnlab.registry import TASKS
from rnnlab.tasks.specs import TaskConfig


@dataclass
class ForecastTaskConfig(TaskConfig):
    name: str = "forecast"
    monitor: str = "val/mae"
    mode: str = "min"


TASKS.add(
    "forecast",
    target="rnnlab.tasks.forecast:ForecastTask",
    schema=ForecastTaskConfig,
    accepts="forecast",  # (window of float features [T, F], future targets [horizon, targets])
    doc="window of a series -> the next data.horizon values; val/mae, val/rmse, val/mape and persistence",
)
