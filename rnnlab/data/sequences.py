"""Synthetic sequence problems with known answers: the adding problem (data=adding).

The adding problem (Hochreiter & Schmidhuber 1997; in the form of Le, Jaitly & Hinton 2015): every sequence has
``length`` steps of two features. The first is a value drawn from U(0, 1); the second is a marker, 1 at exactly two
steps (one drawn uniformly from the first half, one from the second half) and 0 elsewhere. The target is the sum of
the two marked values. Predicting the constant mean 1 scores MSE = Var(u1 + u2) = 2/12 = 0.1667 (the baseline);
a model that solves the task must carry a value across up to ``length`` steps, which a vanilla RNN trained by
gradient descent cannot do for long sequences because the gradient vanishes on the way back (rnnlab.analysis).

Every split comes from its own generator stream derived from ``generator_seed``, so every run and both backends see
the same sequences whatever the run's seed; the run's seed only shuffles the training order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rnnlab.data.datamodules import _Loaders
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

SPLITS = ("train", "val", "test")


def adding_problem(num: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num`` sequences: x [num, length, 2] float32 (value, marker), y [num, 1] float32 (sum of marked values)."""
    if length < 2:
        raise ValueError(f"the adding problem needs length >= 2, got {length}")
    values = rng.random((num, length))
    half = length // 2
    first = rng.integers(0, half, size=num)
    second = rng.integers(half, length, size=num)
    markers = np.zeros((num, length))
    rows = np.arange(num)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return x, y


class FloatSequences(Dataset):
    """Fixed-length float sequences and float targets; ``collate`` gathers a batch with one index operation."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.x[idx], self.y[idx]


class AddingDataModule(_Loaders):
    """data=adding: (x [B, length, 2], y [B, 1]) batches; ``baseline_mse`` per split (predicting the training
    targets' mean)."""

    input_features = 2

    def __init__(
        self,
        length: int,
        num_train: int,
        num_val: int,
        num_test: int,
        generator_seed: int,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.length = length
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.generator_seed = generator_seed
        self.vocab = CharVocab([])  # float inputs: no symbols
        self.num_outputs = 1
        self.baseline_mse: dict[str, float] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        streams = np.random.SeedSequence([self.generator_seed, self.length]).spawn(len(SPLITS))
        data = {
            split: adding_problem(self.sizes[split], self.length, np.random.default_rng(stream))
            for split, stream in zip(SPLITS, streams, strict=True)
        }
        mean = float(data["train"][1].mean(dtype=np.float64))
        self.baseline_mse = {s: float(np.mean((y.astype(np.float64) - mean) ** 2)) for s, (_, y) in data.items()}
        self.splits = {s: FloatSequences(x, y) for s, (x, y) in data.items()}


def build_adding(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> AddingDataModule:
    if data_cfg.length < 2:
        raise DataError(f"data.length must be >= 2 for data=adding, got {data_cfg.length}")
    return AddingDataModule(
        length=data_cfg.length,
        num_train=data_cfg.num_train,
        num_val=data_cfg.num_val,
        num_test=data_cfg.num_test,
        generator_seed=data_cfg.generator_seed,
        seed=seed,
        **common,
    )
