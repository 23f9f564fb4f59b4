"""data=dates: human-written dates -> ISO 8601 (rnnlab.data.seq2seq_data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.registry import DATASETS
from rnnlab.specs import positive, split_fractions


@dataclass
class DatesConfig(DataConfig):
    """Human-written dates (1900-2099, many formats and languages) -> ISO 8601; see rnnlab.data.seq2seq_data."""

    num_samples: int = 20_000
    locales: list[str] = field(default_factory=lambda: ["en", "fr", "de", "es", "it", "pt", "nl"])
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    generator_seed: int = 1234  # its own seed: every run and both backends see the same dates


def check(cfg: Any) -> None:
    positive(cfg, "data.num_samples")
    if not cfg.data.locales:
        raise ConfigError("data.locales must name at least one locale, e.g. data.locales=[en]")
    split_fractions(cfg)


DATASETS.add(
    "dates",
    target="rnnlab.data.seq2seq_data:build_dates",
    schema=DatesConfig,
    kind="seq2seq",
    check=check,
    quick=("data.num_samples=600",),
    doc="human-written dates in many formats and 7 languages -> ISO 8601, character level",
)
