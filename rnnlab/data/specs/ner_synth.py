"""data=ner_synth: generated sentences with BIO entity tags (rnnlab.data.sequences)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.registry import DATASETS
from rnnlab.specs import split_sizes


@dataclass
class NerSynthConfig(DataConfig):
    """Generated sentences with PER / ORG / LOC / MISC entities in BIO tags; see rnnlab.data.sequences."""

    num_train: int = 8_000
    num_val: int = 1_000
    num_test: int = 1_000
    generator_seed: int = 2003


def check(cfg: Any) -> None:
    split_sizes(cfg)


DATASETS.add(
    "ner_synth",
    target="rnnlab.data.sequences:build_ner_synth",
    schema=NerSynthConfig,
    kind="tagging",
    check=check,
    monitors={"tag": "val/entity_f1"},  # BIO entity tags: span F1, not token accuracy
    doc="generated sentences with PER / ORG / LOC / MISC entities in BIO tags",
)
