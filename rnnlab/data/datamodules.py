"""Lightning data modules. Each exposes ``vocab`` (saved with the checkpoint) and ``num_outputs`` after setup."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rnnlab.data import corpus, synthetic_text
from rnnlab.data.sampling import EpochSeededSampler
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

PAD = "<pad>"


class _Loaders(L.LightningDataModule):
    """Shared loader construction: a (seed, epoch)-driven shuffle for training, fixed order otherwise."""

    def __init__(self, batch_size: int, num_workers: int, pin_memory: bool, seed: int):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.splits: dict[str, Dataset] = {}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.splits[split]
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=EpochSeededSampler(len(ds), self.seed, shuffle=shuffle),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=getattr(ds, "collate", None),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


# ------------------------------------------------------------------------------------ classification
class PaddedSequences(Dataset):
    """Token sequences stored padded; ``collate`` trims each batch to its own longest sequence."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray):
        self.ids = torch.as_tensor(ids)
        self.lengths = torch.as_tensor(lengths)
        self.labels = torch.as_tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> int:
        return i  # collate gathers whole batches with one index operation

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        lengths = self.lengths[idx]
        x = self.ids[idx, : int(lengths.max())]
        return x, lengths, self.labels[idx]


class SyntheticTextDataModule(_Loaders):
    """data=synthetic_text; see rnnlab.data.synthetic_text for the generating rule."""

    def __init__(
        self,
        num_samples: int,
        min_len: int,
        max_len: int,
        num_classes: int,
        generator_seed: int,
        test_fraction: float,
        val_fraction: float,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.hp = dict(
            num_samples=num_samples,
            min_len=min_len,
            max_len=max_len,
            num_classes=num_classes,
            generator_seed=generator_seed,
        )
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.vocab = CharVocab([PAD, *synthetic_text.ALPHABET])
        self.pad_id = 0
        self.num_outputs = num_classes

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        ids, lengths, labels = synthetic_text.generate(
            self.hp["num_samples"],
            self.hp["min_len"],
            self.hp["max_len"],
            self.hp["num_classes"],
            self.hp["generator_seed"],
        )
        ids = np.where(ids >= 0, ids + 1, self.pad_id)  # shift past <pad>
        n = len(labels)
        order = np.random.default_rng(self.hp["generator_seed"] + 1).permutation(n)
        n_test = round(n * self.test_fraction)
        n_val = round((n - n_test) * self.val_fraction)
        if min(n_test, n_val, n - n_test - n_val) < 1:
            raise DataError(f"data.num_samples={n} is too small to make train, val and test splits")
        parts = {
            "test": order[:n_test],
            "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :],
        }
        self.splits = {k: PaddedSequences(ids[v], lengths[v], labels[v]) for k, v in parts.items()}


# ------------------------------------------------------------------------------- character corpora
class CharWindows(Dataset):
    """Non-overlapping windows of a token stream: item i is (x, y) = (s[iL : iL+L], s[iL+1 : iL+L+1]).

    Windows are views into one int32 array, so memory stays at one copy of the corpus however it is batched.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int):
        self.tokens = torch.from_numpy(np.ascontiguousarray(tokens))
        self.seq_len = seq_len
        self.n = (len(tokens) - 1) // seq_len

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.as_tensor(indices) * self.seq_len
        rows = starts[:, None] + torch.arange(self.seq_len + 1)
        window = self.tokens[rows].long()
        return window[:, :-1], window[:, 1:]


class CharCorpusDataModule(_Loaders):
    """data=shakespeare and data=text_file: one text, split by position into train / val / test."""

    def __init__(
        self,
        name: str,
        path: str | None,
        seq_len: int,
        val_fraction: float,
        test_fraction: float,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.name = name
        self.path = path
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.cache_dir = cache_dir
        self.vocab: CharVocab | None = None
        self.num_outputs = 0

    def load_text(self) -> str:
        if self.path is not None:
            return corpus.read_text_file(self.path)
        return corpus.shakespeare_text(self.cache_dir)

    def prepare_data(self) -> None:
        if self.path is None:
            corpus.shakespeare_text(self.cache_dir)  # convert and cache once, on one process

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        text = self.load_text()
        self.vocab = CharVocab.from_text(text)
        self.num_outputs = len(self.vocab)
        tokens = self.vocab.encode_corpus(text)
        n = len(tokens)
        n_val, n_test = int(n * self.val_fraction), int(n * self.test_fraction)
        n_train = n - n_val - n_test
        where = self.path or "the Shakespeare corpus"
        for split, size in (("train", n_train), ("val", n_val), ("test", n_test)):
            if size < self.seq_len + 1:
                raise DataError(
                    f"data.seq_len={self.seq_len}: the {split} split of {where} has only {size} characters; "
                    "use a longer text or a shorter data.seq_len"
                )
        self.splits = {
            "train": CharWindows(tokens[:n_train], self.seq_len),
            "val": CharWindows(tokens[n_train : n_train + n_val], self.seq_len),
            "test": CharWindows(tokens[n_train + n_val :], self.seq_len),
        }


def build_synthetic_text(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> SyntheticTextDataModule:
    return SyntheticTextDataModule(
        num_samples=data_cfg.num_samples,
        min_len=data_cfg.min_len,
        max_len=data_cfg.max_len,
        num_classes=data_cfg.num_classes,
        generator_seed=data_cfg.generator_seed,
        test_fraction=data_cfg.test_fraction,
        val_fraction=data_cfg.val_fraction,
        seed=seed,
        **common,
    )


def build_char_corpus(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> CharCorpusDataModule:
    return CharCorpusDataModule(
        name=data_cfg.name,
        path=data_cfg.path,
        seq_len=data_cfg.seq_len,
        val_fraction=data_cfg.val_fraction,
        test_fraction=data_cfg.test_fraction,
        cache_dir=cache_dir,
        seed=seed,
        **common,
    )


# ``data.name`` -> "module:function" taking (data_cfg, seed, cache_dir, batch_size=, num_workers=, pin_memory=)
DATA: dict[str, str] = {
    "synthetic_text": "rnnlab.data.datamodules:build_synthetic_text",
    "shakespeare": "rnnlab.data.datamodules:build_char_corpus",
    "text_file": "rnnlab.data.datamodules:build_char_corpus",
    "adding": "rnnlab.data.sequences:build_adding",
    "imdb": "rnnlab.data.reviews:build_reviews",
    "copy": "rnnlab.data.tagging:build_copy",
    "ner_synth": "rnnlab.data.tagging:build_ner",
    "rt_sentences": "rnnlab.data.reviews:build_reviews",
}


def build_datamodule(data_cfg: Any, seed: int, cache_dir: str | None) -> L.LightningDataModule:
    """The data module of ``data.name`` (see ``DATA``), imported only when used."""
    import importlib

    target = DATA.get(str(data_cfg.name))
    if target is None:
        raise DataError(f"data={data_cfg.name}: no data module is registered under that name")
    module, _, attr = target.partition(":")
    common = dict(batch_size=data_cfg.batch_size, num_workers=data_cfg.num_workers, pin_memory=data_cfg.pin_memory)
    return getattr(importlib.import_module(module), attr)(data_cfg, seed, cache_dir, **common)
