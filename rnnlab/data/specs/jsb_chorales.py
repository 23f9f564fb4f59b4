"""data=jsb_chorales: the Bach chorales as piano rolls, for task=polyphonic (rnnlab.data.music)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.registry import DATASETS
from rnnlab.specs import positive, split_fractions


@dataclass
class JsbChoralesConfig(DataConfig):
    """The chorales of music21's corpus (or the standard split from data.path) as 88-key piano rolls, one step per
    quarter note; see rnnlab.data.music."""

    path: str | None = None  # the standard split as JSON or pickle ({"train"|"valid"|"test": ...}), used as it is
    max_chorales: int | None = None  # the first N chorales of the corpus only (tests, quick runs)
    val_fraction: float = 0.19895  # 76 / 382 and 77 / 382: the standard split's proportions
    test_fraction: float = 0.20157
    generator_seed: int = 382  # its own seed: every run and both backends see the same split
    transpose: str = "c"  # "c": every chorale to C major / C minor, as the standard file; "none": written keys
    octave_shift: int = 1  # octaves added to every note: 1 is the standard file's register, 0 the written one
    expand_repeats: bool = True  # write out repeated sections (music21's expandRepeats)


def check(cfg: Any) -> None:
    positive(cfg, "data.max_chorales")
    split_fractions(cfg)
    if cfg.data.transpose not in ("c", "none"):
        raise ConfigError(f"data.transpose must be c or none, got {cfg.data.transpose}")


DATASETS.add(
    "jsb_chorales",
    target="rnnlab.data.music:build_jsb_chorales",
    schema=JsbChoralesConfig,
    kind="piano_roll",
    check=check,
    quick=("data.max_chorales=12",),
    doc="the Bach chorales of the music21 corpus as 88-key piano rolls, one step per quarter note",
)
