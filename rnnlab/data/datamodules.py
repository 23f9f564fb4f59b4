"""Lightning data modules. Each exposes ``vocab`` (saved with the checkpoint) and ``num_outputs`` after setup."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from rnnlab.data import corpus, synthetic_text, token_cache
from rnnlab.data.sampling import EpochSeededSampler, ResumableLoader, ShardedSampler, replicas
from rnnlab.data.token_cache import TokenSlice
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

    def source_files(self) -> list[Path]:
        """The files this data is read from (their checksum is the run's ``data_sha256``); none for generated
        data, whose identity is its generator's settings."""
        return []

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.splits[split]
        return self._make_loader(
            split,
            ds,
            batch_size=self.batch_size,
            sampler=EpochSeededSampler(len(ds), self.seed, shuffle=shuffle),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=getattr(ds, "collate", None),
            persistent_workers=self.num_workers > 0,
        )

    def _make_loader(self, split: str, dataset: Dataset, **kwargs: Any) -> DataLoader:
        """The training loader resumes mid-epoch (:class:`ResumableLoader`); evaluation loaders are plain. In a
        multi-process run each process gets its share of the sampler's order (:class:`ShardedSampler`)."""
        shard = replicas()
        if shard is not None and kwargs.get("sampler") is not None:
            rank, world = shard
            if split != "train" and len(kwargs["sampler"]) < world:
                raise DataError(
                    f"the {split} split has {len(kwargs['sampler'])} samples, fewer than the {world} processes of "
                    "this run: every process needs at least one"
                )
            layout = "stride" if split == "train" else "block"
            kwargs["sampler"] = ShardedSampler(kwargs["sampler"], world, rank, layout)
        if split == "train":
            return ResumableLoader(dataset, position=self._train_position, **kwargs)
        return DataLoader(dataset, **kwargs)

    def _train_position(self) -> tuple[int, int]:
        """(epoch, training batches the loop has trained on this epoch), for the training loader's ``state_dict``;
        0 once the epoch is complete (``trainer.num_training_batches`` may stop it before the last batch).

        Batches whose step has run (``processed``), not those fetched (``ready``): a checkpoint written before a
        step (a signal between two steps stops at the next ``on_train_batch_start``, where the batch is fetched
        but not trained) must resume with that batch, not after it."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 0
        taken = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        return trainer.current_epoch, taken if taken < trainer.num_training_batches else 0

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
        self.class_names = list(synthetic_text.ALPHABET[:num_classes])  # label i: letter i occurs most often

    def predict_info(self) -> dict[str, Any]:
        """How rnnlab-predict reads new text for this data (saved with the checkpoint): characters, none unknown."""
        return {"tokenizer": "chars", "unknown": None, "labels": list(self.class_names)}

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
def _token_rows(tokens: np.ndarray | TokenSlice, starts: np.ndarray, width: int) -> torch.Tensor:
    """``tokens[s : s + width]`` for every start s, as int64 [len(starts), width]: a copy of those rows only."""
    if isinstance(tokens, TokenSlice):
        return torch.from_numpy(tokens.rows(starts, width).astype(np.int64))  # positional reads from the file
    return torch.from_numpy(tokens[starts[:, None] + np.arange(width)].astype(np.int64))


class CharWindows(Dataset):
    """Non-overlapping windows of a token stream: item i is (x, y) = (s[iL : iL+L], s[iL+1 : iL+L+1]).

    ``tokens`` is a 1-D array or, for the corpus data modules, a ``TokenSlice`` of a token file on disk; either
    way a batch copies its own windows and nothing else.
    """

    def __init__(self, tokens: np.ndarray | TokenSlice, seq_len: int):
        self.tokens = tokens if isinstance(tokens, TokenSlice) else np.ascontiguousarray(tokens)
        self.seq_len = seq_len
        self.n = (len(tokens) - 1) // seq_len

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        starts = np.asarray(indices, dtype=np.int64) * self.seq_len
        if starts.size and not 0 <= int(starts.min()) <= int(starts.max()) < self.n * self.seq_len:
            raise IndexError(f"windows {min(indices)}..{max(indices)} of {self.n}")
        window = _token_rows(self.tokens, starts, self.seq_len + 1)
        return window[:, :-1], window[:, 1:]


class CharStreams(Dataset):
    """A token stream as ``batch_size`` contiguous streams, for stateful truncated BPTT (``data.tbptt=true``).

    With n tokens s, B streams and windows of L: each stream holds m = (n - 1) // B inputs, stream b being
    s[bm : (b+1)m] with targets s[bm+1 : (b+1)m+1]. Item i is a whole batch, window i of every stream::

        x[b] = s[bm + iL : bm + (i+1)L],   y[b] = s[bm + iL + 1 : bm + (i+1)L + 1],   i = 0 .. m // L - 1

    so row b of batch i+1 continues row b of batch i exactly, and a state carried from one batch to the next
    has seen the text that precedes the window. The m mod L characters left at the end of every stream (and
    the (n - 1) mod B at the end of the split) are dropped, as in the classic char-rnn batching: every window
    has the full length L. ``tokens`` is an array or a ``TokenSlice`` (see ``CharWindows``); each batch reads
    its B rows and nothing else.
    """

    def __init__(self, tokens: np.ndarray | TokenSlice, batch_size: int, seq_len: int):
        self.tokens = tokens if isinstance(tokens, TokenSlice) else np.ascontiguousarray(tokens)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.stream_len = (len(tokens) - 1) // batch_size
        self.n = self.stream_len // seq_len
        self.stream_starts = np.arange(batch_size, dtype=np.int64) * self.stream_len

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(f"window {i} of {self.n}")
        window = _token_rows(self.tokens, self.stream_starts + i * self.seq_len, self.seq_len + 1)
        return window[:, :-1], window[:, 1:]

    def shard(self, rank: int, world: int) -> CharStreams:
        """Process ``rank``'s streams when ``world`` processes carry B = ``batch_size`` streams each: the split is cut
        into BW streams, as one process with data.batch_size=BW would cut it, and the process reads streams
        rB .. (r+1)B - 1 window after window. Step i of the W processes together reads window i of every stream."""
        whole = CharStreams(self.tokens, self.batch_size * world, self.seq_len)
        whole.stream_starts = whole.stream_starts[rank * self.batch_size : (rank + 1) * self.batch_size]
        whole.batch_size = self.batch_size
        return whole


class _StreamOrder(Sampler[int]):
    """Windows 0 .. n-1 in order, starting once at ``start`` (a mid-epoch resume); ``len`` is always n."""

    def __init__(self, n: int):
        self.n = n
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(range(start, self.n))

    def __len__(self) -> int:
        return self.n


class _ShardedStreamOrder(_StreamOrder, DistributedSampler):
    """``_StreamOrder`` in a multi-process run: every process reads every window of its own streams
    (``CharStreams.shard``). A DistributedSampler, so that Lightning does not shard the windows a second time."""

    def __init__(self, n: int, num_replicas: int, rank: int):
        _StreamOrder.__init__(self, n)
        self.num_replicas, self.rank, self.epoch, self.seed = num_replicas, rank, 0, 0
        self.shuffle = self.drop_last = False
        self.num_samples, self.total_size = n, n * num_replicas


class StreamLoader(DataLoader):
    """The loader of a ``CharStreams`` split: one item per batch, in order, never shuffled.

    It is resumable (Lightning saves ``state_dict`` into checkpoints and calls ``load_state_dict`` before it
    iterates again): the state is the epoch and the number of windows the training loop has taken this epoch,
    read from ``position`` (the loop's own batch counter, which excludes the batch Lightning prefetches). A
    resume in the middle of that epoch continues at the next window; a position at the end of the epoch starts
    the next epoch from window 0 (Lightning restores the epoch number itself).
    """

    def __init__(
        self,
        dataset: CharStreams,
        position: Callable[[], tuple[int, int]] | None = None,
        replicas: tuple[int, int] | None = None,
        **kwargs: Any,
    ):
        # Lightning rebuilds loaders from their attributes (trainer.overfit_batches, ...): the stream order and
        # the one-window-per-item batching are not negotiable, so those arguments are replaced, not passed on
        for key in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
            kwargs.pop(key, None)
        n = len(dataset)
        order = _StreamOrder(n) if replicas is None else _ShardedStreamOrder(n, replicas[1], replicas[0])
        super().__init__(dataset, batch_size=None, sampler=order, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, int]:
        epoch, taken = self.position() if self.position is not None else (0, 0)
        return {"epoch": int(epoch), "windows_taken": int(taken)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        taken = int(state.get("windows_taken", 0))
        self.sampler.start = taken if 0 < taken < len(self.dataset) else 0


class CharCorpusDataModule(_Loaders):
    """data=shakespeare and data=text_file: one text, split by position into train / val / test.

    Batches are (x, y) = (inputs [B, L], next-character targets [B, L]). By default they are shuffled
    non-overlapping windows (``CharWindows``); with ``tbptt`` each split is cut into batch_size contiguous
    streams read in order (``CharStreams``, ``StreamLoader``), for a model that carries its state across batches.

    The text is encoded once into a token file in the cache (``rnnlab.data.token_cache``: streamed in chunks of
    ``chunk_bytes``, reused while the file is unchanged) and the splits read their windows from that file, so
    memory does not grow with the corpus.
    """

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
        tbptt: bool = False,
        chunk_bytes: int = token_cache.CHUNK_BYTES,
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.name = name
        self.path = path
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.cache_dir = cache_dir
        self.tbptt = tbptt
        self.chunk_bytes = chunk_bytes
        self.vocab: CharVocab | None = None
        self.num_outputs = 0
        self.token_file: token_cache.TokenFile | None = None

    def source_files(self) -> list[Path]:
        return [self.text_path()]

    def text_path(self) -> Path:
        """The text to model: data.path, or the Shakespeare text (converted into the cache on first use)."""
        if self.path is not None:
            return corpus.check_text_file(self.path)
        return corpus.shakespeare_path(self.cache_dir)

    def prepare_data(self) -> None:
        # convert and encode once, on one process; setup then finds the token file in the cache
        token_cache.cached_tokens(self.text_path(), self.cache_dir, self.chunk_bytes)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        tokens = self.token_file = token_cache.cached_tokens(self.text_path(), self.cache_dir, self.chunk_bytes)
        self.vocab = tokens.vocab
        self.num_outputs = len(self.vocab)
        n = tokens.n
        n_val, n_test = int(n * self.val_fraction), int(n * self.test_fraction)
        n_train = n - n_val - n_test
        where = self.path or "the Shakespeare corpus"
        for split, size in (("train", n_train), ("val", n_val), ("test", n_test)):
            if size < self.seq_len + 1:
                raise DataError(
                    f"data.seq_len={self.seq_len}: the {split} split of {where} has only {size} characters; "
                    "use a longer text or a shorter data.seq_len"
                )
            if self.tbptt and size < self.batch_size * self.seq_len + 1:
                raise DataError(
                    f"data.tbptt=true: the {split} split of {where} has {size} characters, fewer than "
                    f"data.batch_size * data.seq_len + 1 = {self.batch_size * self.seq_len + 1} (one window per "
                    "stream); use a longer text, a smaller data.batch_size or a shorter data.seq_len"
                )
        parts = {
            "train": tokens.slice(0, n_train),
            "val": tokens.slice(n_train, n_train + n_val),
            "test": tokens.slice(n_train + n_val, n),
        }
        if self.tbptt:
            self.splits = {k: CharStreams(v, self.batch_size, self.seq_len) for k, v in parts.items()}
            return
        self.splits = {k: CharWindows(v, self.seq_len) for k, v in parts.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.tbptt:
            return super()._loader(split, shuffle)
        streams, shard = self.splits[split], replicas()
        if shard is not None:  # (rank, processes): this process's streams, rows of every window
            streams = streams.shard(*shard)
            if len(streams) == 0:
                raise DataError(
                    f"data.tbptt=true: the {split} split is too short for {shard[1]} processes x data.batch_size="
                    f"{self.batch_size} streams of at least data.seq_len={self.seq_len} characters"
                )
        return StreamLoader(
            streams,
            position=self._train_position if split == "train" else None,
            replicas=shard,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )


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
        tbptt=bool(data_cfg.get("tbptt", False)),
        **common,
    )


def build_datamodule(data_cfg: Any, seed: int, cache_dir: str | None) -> L.LightningDataModule:
    """The data module of ``data.name``: the builder registered under that name (``rnnlab.registry.DATASETS``,
    declared in ``rnnlab/data/specs/``), a function ``(data_cfg, seed, cache_dir, batch_size=, num_workers=,
    pin_memory=)`` imported only when used."""
    from rnnlab.registry import DATASETS, RegistryError

    try:
        entry = DATASETS.get(str(data_cfg.name))
    except RegistryError as err:
        raise DataError(f"data={data_cfg.name}: {err}") from None
    common = dict(batch_size=data_cfg.batch_size, num_workers=data_cfg.num_workers, pin_memory=data_cfg.pin_memory)
    return entry.load()(data_cfg, seed, cache_dir, **common)
