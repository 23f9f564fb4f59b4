"""A shuffling sampler whose order depends only on (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler[int]):
    """Permutation of range(n) drawn from ``np.random.default_rng((seed, epoch))``.

    Lightning calls ``set_epoch`` at the start of every epoch (also after a resume), so the order never depends
    on a global RNG that a restart would reset.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.n)
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.n
