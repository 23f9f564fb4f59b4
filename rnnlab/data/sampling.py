"""Training orders that depend only on (seed, epoch), and a loader that resumes in the middle of an epoch.

A restart resets every global RNG, so the order of epoch e is drawn from ``default_rng((seed, e))`` alone. A
checkpoint written after k batches of an epoch records k (``ResumableLoader.state_dict``, which Lightning saves in
the checkpoint's loop state); the resumed run draws the same order and starts it at batch k.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, DistributedSampler, Sampler


class SkipOnce:
    """Mixin for samplers: ``skip_once(k)`` makes the next ``__iter__`` start at its k-th index (a mid-epoch
    resume); the iteration after it is whole again. ``len`` stays the full length."""

    _skip = 0

    def skip_once(self, k: int) -> None:
        self._skip = max(0, int(k))

    def _take_skip(self) -> int:
        k, self._skip = self._skip, 0
        return k


class EpochSeededSampler(SkipOnce, Sampler[int]):
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
        start = self._take_skip()
        if not self.shuffle:
            return iter(range(start, self.n))
        # the order default_rng(...).permutation(n) draws (the same shuffle of the same arange), held as int32 and
        # handed out lazily: 4 bytes per sample, where a list of Python ints would hold ~36
        order = np.arange(self.n, dtype=np.int32 if self.n < 2**31 else np.int64)
        np.random.default_rng((self.seed, self.epoch)).shuffle(order)
        return map(int, order[start:])

    def __len__(self) -> int:
        return self.n


class ResumableLoader(DataLoader):
    """A training DataLoader whose position inside the epoch survives a restart.

    ``position()`` returns (epoch, batches the training loop has taken this epoch); Lightning stores
    ``state_dict()`` in every checkpoint and calls ``load_state_dict`` before it iterates again after a resume,
    which makes the sampler (a :class:`SkipOnce`) start at the first batch not yet trained on. A position at the
    end of an epoch (0) starts the next epoch from its first batch; Lightning restores the epoch number itself.
    """

    def __init__(self, *args: Any, position: Callable[[], tuple[int, int]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, int]:
        epoch, taken = self.position() if self.position is not None else (0, 0)
        world = replicas()
        return {"epoch": int(epoch), "batches_taken": int(taken), "batch_size": int(self.batch_size or 1),
                "processes": world[1] if world else 1}  # fmt: skip

    def load_state_dict(self, state: dict[str, int]) -> None:
        taken = int(state.get("batches_taken", 0))
        if taken <= 0:  # an epoch boundary: any batch size and process count can go on from here
            return
        world = replicas()
        theirs = (int(state.get("batch_size", self.batch_size or 1)), int(state.get("processes", 1)))
        ours = (int(self.batch_size or 1), world[1] if world else 1)
        if theirs != ours:
            from rnnlab.errors import ConfigError

            raise ConfigError(
                f"ckpt_path: the checkpoint stopped {taken} batches into an epoch with data.batch_size={theirs[0]} "
                f"on {theirs[1]} process(es), this run has data.batch_size={ours[0]} on {ours[1]}; resume with the "
                "same batch size and process count, or from a checkpoint at the end of an epoch"
            )
        sampler = self.sampler
        if isinstance(sampler, SkipOnce):
            sampler.skip_once(taken * ours[0])


class ShardedSampler(SkipOnce, DistributedSampler):
    """One process's share of another sampler's order, in a multi-process (DDP) run of ``num_replicas`` processes.

    ``layout="stride"`` (training): the whole order of ``sampler`` (its ``(seed, epoch)`` permutation) is padded
    with its own first indices to a multiple of W = ``num_replicas``, as torch's DistributedSampler pads, and rank
    r takes positions r, r + W, r + 2W, ... So every process has as many batches (DDP steps them together), and
    step k of the W processes with batches of B trains on positions [kBW, (k+1)BW) of the order: the batch k of one
    process with batches of BW, in the same (seed, epoch) order.

    ``layout="block"`` (evaluation): rank r takes positions [floor(rn/W), floor((r+1)n/W)), unpadded: every sample is
    scored exactly once, and the processes' results concatenated in rank order are in the order of ``sampler``.

    ``layout="whole"``: every process reads every index (a dataset that is itself split between the processes,
    the streams of data.tbptt).

    Being a DistributedSampler, Lightning neither replaces it nor wraps it in a DistributedSamplerWrapper (whose
    own shuffle would reorder the epoch; ``trainer.use_distributed_sampler`` does not matter); its ``set_epoch``
    reaches ``sampler``. ``skip_once(k)`` (a mid-epoch resume) skips the first k indices of this process's share.
    """

    def __init__(self, sampler: Sampler[int], num_replicas: int, rank: int, layout: str = "stride"):
        # not DistributedSampler.__init__: it wants a dataset and a process group; these are the attributes it sets
        if layout not in ("stride", "block", "whole"):
            raise ValueError(f"layout must be stride, block or whole, got {layout!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.sampler = sampler
        self.num_replicas = num_replicas
        self.rank = rank
        self.layout = layout
        self.epoch = 0
        self.shuffle = False  # the order is the wrapped sampler's
        self.seed = 0
        self.drop_last = False
        n = len(sampler)  # type: ignore[arg-type]
        self.num_samples = len(self._positions(n))
        self.total_size = self.num_samples * num_replicas if layout == "stride" else n

    def _positions(self, n: int) -> range | list[int]:
        w, r = self.num_replicas, self.rank
        if self.layout == "whole":
            return range(n)
        if self.layout == "block":
            return range(r * n // w, (r + 1) * n // w)
        padded = n + (-n) % w if n else 0
        return [i % n for i in range(r, padded, w)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        start = self._take_skip()
        order = list(self.sampler)
        mine = [order[i] for i in self._positions(len(order))]
        return iter(mine[start:])

    def __len__(self) -> int:
        return self.num_samples


def replicas() -> tuple[int, int] | None:
    """(rank, number of processes) when loaders are built inside a multi-process run (a torch.distributed
    process group exists, as Lightning's DDP sets up before it asks for the loaders), else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.get_rank(), dist.get_world_size()
