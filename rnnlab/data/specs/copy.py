"""data=copy: the copy-memory task (rnnlab.data.sequences)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.registry import DATASETS
from rnnlab.specs import positive, split_sizes


@dataclass
class CopyConfig(DataConfig):
    """The copy-memory task: remember ``copy_length`` symbols over a delay of ``length`` steps; see
    rnnlab.data.sequences."""

    length: int = 50  # the delay between the symbols and their recall
    copy_length: int = 5
    num_symbols: int = 8
    num_train: int = 10_000
    num_val: int = 1_000
    num_test: int = 1_000
    generator_seed: int = 1997


def check(cfg: Any) -> None:
    for key in ("data.length", "data.copy_length", "data.num_symbols"):
        positive(cfg, key)
    if cfg.data.num_symbols < 2:
        raise ConfigError(f"data.num_symbols must be >= 2, got {cfg.data.num_symbols}")
    if cfg.data.copy_length > cfg.data.length:
        raise ConfigError(
            f"data.copy_length ({cfg.data.copy_length}) must be <= data.length ({cfg.data.length}): "
            "the delay has to be at least as long as the symbols to remember"
        )
    split_sizes(cfg)


DATASETS.add(
    "copy",
    target="rnnlab.data.sequences:build_copy",
    schema=CopyConfig,
    kind="tagging",
    check=check,
    quick=("data.length=10",),
    doc="copy memory: recall data.copy_length symbols after a delay of data.length steps",
)
