"""task=language_model: next-character prediction; a temperature-sampled text is logged at every validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.errors import ConfigError
from rnnlab.registry import TASKS
from rnnlab.specs import positive
from rnnlab.tasks.specs import TaskConfig


@dataclass
class LanguageModelTaskConfig(TaskConfig):
    name: str = "language_model"
    monitor: str = "val/bpc"
    mode: str = "min"
    sample_prompt: str = ""  # empty: start from a newline
    sample_length: int = 300
    temperature: float = 0.8
    top_k: int | None = None


def check(cfg: Any) -> None:
    """No backward direction (it would see what it predicts); the sampling options."""
    if cfg.model.bidirectional:
        raise ConfigError(
            "model.bidirectional=true cannot be used with task=language_model: "
            "the backward direction would see the characters it has to predict"
        )
    positive(cfg, "task.sample_length", allow_zero=True)
    positive(cfg, "task.temperature")
    positive(cfg, "task.top_k")


TASKS.add(
    "language_model",
    target="rnnlab.tasks.language_model:LanguageModelTask",
    schema=LanguageModelTaskConfig,
    accepts="char_corpus",  # windows of a character stream
    check=check,
    doc="next-character prediction with sampled text; val/bpc",
)
