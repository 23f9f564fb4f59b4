"""data=synthetic_text: generated strings over "abcdefgh", labelled by their most frequent letter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.registry import DATASETS
from rnnlab.specs import fraction, positive


@dataclass
class SyntheticTextConfig(DataConfig):
    num_samples: int = 10_000
    test_fraction: float = 0.2  # the seed study's 80/20 split
    val_fraction: float = 0.1  # carved from the training part
    min_len: int = 20
    max_len: int = 40
    num_classes: int = 2
    generator_seed: int = 1234  # its own seed: every run and both backends see the same data


def check(cfg: Any) -> None:
    for key in ("data.num_samples", "data.min_len", "data.max_len"):
        positive(cfg, key)
    if cfg.data.min_len > cfg.data.max_len:
        raise ConfigError(f"data.min_len ({cfg.data.min_len}) must be <= data.max_len ({cfg.data.max_len})")
    if not 2 <= cfg.data.num_classes <= 8:
        raise ConfigError(f"data.num_classes must be in [2, 8], got {cfg.data.num_classes}")
    fraction(cfg, "data.test_fraction", low_open=True)
    fraction(cfg, "data.val_fraction", low_open=True)


DATASETS.add(
    "synthetic_text",
    target="rnnlab.data.datamodules:build_synthetic_text",
    schema=SyntheticTextConfig,
    kind="classification",
    check=check,
    doc="generated strings over abcdefgh, labelled by their most frequent letter (the seed study)",
)
