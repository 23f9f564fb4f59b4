"""data=adding: the adding problem (rnnlab.data.sequences)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.registry import DATASETS
from rnnlab.specs import split_sizes


@dataclass
class AddingConfig(DataConfig):
    """The adding problem: float sequences of ``length`` steps (value, marker); see rnnlab.data.sequences."""

    length: int = 50
    num_train: int = 10_000
    num_val: int = 1_000
    num_test: int = 1_000
    generator_seed: int = 2015  # its own seed: every run and both backends see the same sequences


def check(cfg: Any) -> None:
    if cfg.data.length < 2:
        raise ConfigError(f"data.length must be >= 2 (two marked steps), got {cfg.data.length}")
    split_sizes(cfg)


DATASETS.add(
    "adding",
    target="rnnlab.data.sequences:build_adding",
    schema=AddingConfig,
    kind="regression",
    check=check,
    quick=("data.length=10",),
    doc="the adding problem: sum the two marked values of a sequence",
)
