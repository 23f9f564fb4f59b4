"""task=polyphonic: polyphonic music, the next piano-roll step from the steps before it (88 Bernoulli outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.errors import ConfigError
from rnnlab.registry import TASKS
from rnnlab.specs import positive
from rnnlab.tasks.specs import TaskConfig


@dataclass
class PolyphonicTaskConfig(TaskConfig):
    name: str = "polyphonic"
    monitor: str = "val/nll"  # nats per predicted step, summed over the 88 keys
    mode: str = "min"
    sample_length: int = 64  # steps sampled after every validation for the piano-roll picture (0: none)
    temperature: float = 1.0  # p(note) = sigmoid(z / temperature) when sampling


def check(cfg: Any) -> None:
    """No backward direction (it would see what it predicts); the sampling options."""
    if cfg.model.bidirectional:
        raise ConfigError(
            "model.bidirectional=true cannot be used with task=polyphonic: "
            "the backward direction would see the steps it has to predict"
        )
    positive(cfg, "task.sample_length", allow_zero=True)
    positive(cfg, "task.temperature")


TASKS.add(
    "polyphonic",
    target="rnnlab.tasks.polyphonic:PolyphonicTask",
    schema=PolyphonicTaskConfig,
    accepts="piano_roll",  # (piano roll inputs [T, 88], lengths, next-step piano roll targets)
    check=check,
    doc="polyphonic music: the next piano-roll step, 88 Bernoulli outputs; val/nll, frame_acc",
)
