"""Labelled series for task=anomaly: data=mitdb, data=anomaly_injected, data=anomaly_csv.

**Sources** (all offline):

- ``mitdb``: 7,500 samples of one MIT-BIH Arrhythmia Database ECG record with a 0/1 label per sample, the file
  ``sktime/datasets/data/mitdb/mitdb.csv`` of the PyPI wheel ``sktime`` 1.2.0 (BSD-3-Clause; the MIT-BIH database
  is on PhysioNet under the Open Data Commons Attribution License), kept unchanged as
  ``rnnlab/data/files/mitdb.csv`` (columns ``data``, ``label``; sha256 d4f2539a...). It is copied rather than read
  from an installed sktime because sktime 1.2.0 requires pandas < 3.1 and rnnlab's environment has pandas 3.1:
  adding it would downgrade pandas. 352 samples are labelled, and they form **one** anomalous event (samples
  6,936 .. 7,287, one abnormal beat near the end of the record).
- ``anomaly_injected``: the hourly Seattle temperatures of 2010 (``seattle-temps.csv`` of the PyPI package
  ``vega-datasets``, 8,759 values, deg F) with anomalies injected by :func:`inject_anomalies` (documented there;
  seeded by ``data.inject_seed``).
- ``anomaly_csv``: a user's CSV file, ``data.path``, with a value column ``data.value_column`` and an optional 0/1
  label column ``data.label_column`` (null: no labels; then the scores are computed and the metrics that need
  labels are skipped).

**Splits.** By time, as the forecast data (rnnlab.data.timeseries.split_bounds): the first 1 - val_fraction -
test_fraction of the steps train, the next val_fraction validate, the last test_fraction test. An *event* is a
maximal run of consecutive labelled steps; :func:`split_events` counts the events and the labelled steps of each
split (an event cut by a split boundary counts in both splits). ``AnomalyDataModule.event_counts`` holds them.

**Normalization.** z = (v - mean) / std with the mean and (population) std of the training split's *unlabelled*
steps; the statistics travel with the checkpoint (the task's ``series`` hparam).

**Windows** (next-step prediction, ``data.window`` = W). A training window starting at step s holds the inputs
z[s .. s + W) and the targets z[s + 1 .. s + W] (the next value at every step); windows start every
``data.stride`` steps inside the training split, and a window is dropped when any of its W + 1 steps is labelled
anomalous: the model is trained on normal behaviour only. For validation and test every step t of the split with
t >= W is *scored*: its window holds the inputs z[t - W .. t) and the targets z[t - W + 1 .. t] (the inputs may
reach back into the previous split: they are the past of the series, not its labels), and the error of the last
prediction, z_hat_t - z_t, is step t's prediction error.

Batches are (x [B, W, 1] float32, y [B, W, 1] float32, t [B] int64, the scored step of each window).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rnnlab.data.datamodules import _Loaders
from rnnlab.data.timeseries import split_bounds, vega_file
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

MITDB_CSV = Path(__file__).parent / "files" / "mitdb.csv"
INJECTED_SOURCE = "seattle-temps.csv"
KINDS = ("spike", "level_shift", "noise_burst")


@dataclass
class Series:
    """A loaded series: values [n] float64 and labels [n] int8 (None: unlabelled)."""

    values: np.ndarray
    labels: np.ndarray | None


# --------------------------------------------------------------------------------------------- sources
def read_labelled_csv(path: Path, value_column: str, label_column: str | None, what: str) -> Series:
    """The value column (finite numbers) and the optional 0/1 label column of a CSV file; a DataError naming the
    file or the key otherwise."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: file not found: {path}")
    try:
        frame = pd.read_csv(path)
    except Exception as err:  # pandas' parser errors: one line naming the file
        raise DataError(f"{what}: cannot read {path} as CSV: {str(err).splitlines()[0]}") from err
    columns = [str(c) for c in frame.columns]
    for key, column in (("data.value_column", value_column), ("data.label_column", label_column)):
        if column is not None and column not in columns:
            raise DataError(f"{key}={column}: no such column in {path} (columns: {', '.join(columns)})")
    values = pd.to_numeric(frame[value_column], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DataError(f"data.value_column={value_column}: row {row + 1} of {path} is not a finite number")
    labels = None
    if label_column is not None:
        raw = pd.to_numeric(frame[label_column], errors="coerce").to_numpy(np.float64)
        bad = ~np.isin(raw, (0.0, 1.0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"data.label_column={label_column}: row {row + 1} of {path} is not 0 or 1")
        labels = raw.astype(np.int8)
    return Series(values, labels)


def load_mitdb(path: Path = MITDB_CSV) -> Series:
    """The MIT-BIH ECG record: 7,500 values and their labels."""
    return read_labelled_csv(path, "data", "label", "data=mitdb")


def load_seattle_temps() -> np.ndarray:
    """Hourly Seattle temperatures of 2010 (deg F), in time order."""
    import pandas as pd

    path = vega_file(INJECTED_SOURCE)
    frame = pd.read_csv(path)
    order = np.argsort(pd.to_datetime(frame["date"], format="%Y/%m/%d %H:%M").to_numpy(), kind="stable")
    return frame["temp"].to_numpy(np.float64)[order]


def inject_anomalies(
    values: np.ndarray, num_anomalies: int, seed: int, min_length: int = 12, max_length: int = 48
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """A copy of ``values`` with ``num_anomalies`` anomalies injected, the 0/1 labels and the list of events.

    The generator (NumPy's ``default_rng(seed)``; the same seed gives the same series) divides the series into
    ``num_anomalies`` equal segments and places one event in each, so every stretch of the series (every split)
    gets its share. With s the standard deviation of the clean series, each event draws its kind uniformly from

    - ``spike``: one step, v_t += sign * U(4, 6) s (sign +1 or -1 with equal probability);
    - ``level_shift``: L steps, v += sign * U(2, 3) s over the run;
    - ``noise_burst``: L steps, v += N(0, (U(1, 2) s)^2) independently at each step of the run;

    with L uniform in [min_length, max_length], a start uniform over the segment's positions that leave the run
    at least one step away from the segment's ends (so events never touch). Every step of an event is labelled 1.
    Each event is reported as {"kind", "start", "length"}."""
    v = np.asarray(values, dtype=np.float64).copy()
    n = len(v)
    segment = n // max(num_anomalies, 1)
    if num_anomalies < 1 or segment < max_length + 2:
        raise DataError(
            f"data.num_anomalies={num_anomalies}: the series has {n} steps, room for 1 .. {n // (max_length + 2)} "
            f"events of up to {max_length} steps"
        )
    rng = np.random.default_rng(seed)
    scale = float(np.std(values))
    labels = np.zeros(n, dtype=np.int8)
    events = []
    for k in range(num_anomalies):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        length = 1 if kind == "spike" else int(rng.integers(min_length, max_length + 1))
        start = k * segment + 1 + int(rng.integers(segment - length - 1))
        run = slice(start, start + length)
        if kind == "spike":
            v[start] += rng.choice((-1.0, 1.0)) * rng.uniform(4.0, 6.0) * scale
        elif kind == "level_shift":
            v[run] += rng.choice((-1.0, 1.0)) * rng.uniform(2.0, 3.0) * scale
        else:
            v[run] += rng.normal(0.0, rng.uniform(1.0, 2.0) * scale, size=length)
        labels[run] = 1
        events.append({"kind": kind, "start": start, "length": length})
    return v, labels, events


# ------------------------------------------------------------------------------------------ events, splits
def runs_of(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of every maximal run of 1s."""
    edges = np.diff(np.concatenate([[0], np.asarray(labels, dtype=np.int8) != 0, [0]]).astype(np.int8))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def split_events(labels: np.ndarray | None, bounds: dict[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
    """Per split: {"steps", "labelled_steps", "events"} (an event cut by a boundary counts in both splits)."""
    counts = {}
    for split, (start, stop) in bounds.items():
        part = None if labels is None else labels[start:stop]
        counts[split] = {
            "steps": stop - start,
            "labelled_steps": 0 if part is None else int(part.sum()),
            "events": 0 if part is None else len(runs_of(part)),
        }
    return counts


# ------------------------------------------------------------------------------------------------ windows
class NextStepWindows(Dataset):
    """Windows over the whole normalized series ``z`` [n]: window i ends at step ``ends[i]`` (its inputs are
    z[e - W .. e), its targets z[e - W + 1 .. e]); ``collate`` gathers a batch with one index operation."""

    def __init__(self, z: np.ndarray, ends: np.ndarray, window: int):
        self.z = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
        self.ends = torch.from_numpy(np.asarray(ends, dtype=np.int64))
        self.window = window

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ends = self.ends[torch.as_tensor(indices)]
        rows = ends[:, None] - self.window + torch.arange(self.window + 1)  # [B, W + 1]: inputs, then the last target
        seq = self.z[rows][..., None]
        return seq[:, :-1], seq[:, 1:], ends


def training_ends(labels: np.ndarray | None, stop: int, window: int, stride: int) -> np.ndarray:
    """The last steps of the training windows inside [0, stop): every ``stride`` steps, none holding a labelled
    step."""
    ends = np.arange(window, stop, stride, dtype=np.int64)
    if labels is None or not len(ends):
        return ends
    bad = np.concatenate([[0], np.cumsum(labels[:stop] != 0)])
    return ends[bad[ends + 1] - bad[ends - window] == 0]  # no labelled step among the window's W + 1 steps


# ---------------------------------------------------------------------------------------- data module
class AnomalyDataModule(_Loaders):
    """A labelled (or unlabelled) univariate series for task=anomaly (see the module docstring).

    After ``setup``: ``values`` (original units), ``labels`` (or None), ``z``, ``bounds``, ``event_counts``,
    ``splits`` (NextStepWindows), ``input_features`` = ``num_outputs`` = 1 and ``series_info()``."""

    def __init__(
        self,
        name: str,
        load: Callable[[], Series],
        window: int,
        stride: int,
        val_fraction: float,
        test_fraction: float,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        source: Path | None = None,
        injected: list[dict[str, Any]] | None = None,
        columns: tuple[str, str | None] = ("value", None),
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.name = name
        self.load = load
        self.source = source
        self.window, self.stride = window, stride
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.vocab = CharVocab([])  # float inputs: no symbols
        self.input_features = 1
        self.num_outputs = 1
        self.values: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.bounds: dict[str, tuple[int, int]] = {}
        self.event_counts: dict[str, dict[str, int]] = {}
        self.injected = injected
        self.value_column, self.label_column = columns  # the names of the source's columns, for rnnlab-predict

    def source_files(self) -> list[Path]:
        return [self.source] if self.source is not None else []

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        series = self.load()
        self.values, self.labels = series.values, series.labels
        n = len(self.values)
        self.bounds = split_bounds(n, self.val_fraction, self.test_fraction)
        for split, (start, stop) in self.bounds.items():
            low = self.window + 1 if split == "train" else 1
            if stop - max(start, self.window) < low:
                raise DataError(
                    f"data.window={self.window}: the {split} split of data={self.name} ({stop - start} of {n} steps) "
                    "has no window; use a shorter data.window or change data.val_fraction / data.test_fraction"
                )
        self.event_counts = split_events(self.labels, self.bounds)
        train_stop = self.bounds["train"][1]
        normal = (
            self.values[:train_stop] if self.labels is None else self.values[:train_stop][self.labels[:train_stop] == 0]
        )
        if len(normal) < 2:
            raise DataError(f"data={self.name}: the train split has fewer than 2 unlabelled steps")
        std = float(normal.std())
        self.mean, self.std = float(normal.mean()), std if std > 0 else 1.0
        self.z = (self.values - self.mean) / self.std
        ends = {
            "train": training_ends(self.labels, train_stop, self.window, self.stride),
            **{s: np.arange(max(self.bounds[s][0], self.window), self.bounds[s][1]) for s in ("val", "test")},
        }
        if not len(ends["train"]):
            raise DataError(
                f"data={self.name}: every training window of data.window={self.window} holds a labelled step"
            )
        self.splits = {split: NextStepWindows(self.z, e, self.window) for split, e in ends.items()}

    def split_labels(self, split: str) -> np.ndarray | None:
        start, stop = self.bounds[split]
        return None if self.labels is None else self.labels[start:stop]

    def series_info(self) -> dict[str, Any]:
        """What scoring a raw series needs; saved with the task's checkpoint."""
        if self.values is None:
            raise RuntimeError("series_info() needs setup() first")
        return {
            "data": self.name,
            "window": self.window,
            "mean": self.mean,
            "std": self.std,
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "events": self.event_counts,
            "value_column": self.value_column,
            "label_column": self.label_column,
        }


def build_anomaly(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> AnomalyDataModule:
    """data=mitdb | anomaly_injected | anomaly_csv."""
    name = str(data_cfg.name)
    for key in ("window", "stride"):
        if int(data_cfg[key]) < 1:
            raise DataError(f"data.{key} must be >= 1, got {data_cfg[key]}")
    injected: list[dict[str, Any]] | None = None
    load: Callable[[], Series]
    if name == "mitdb":
        source: Path | None = MITDB_CSV
        load = load_mitdb
        columns: tuple[str, str | None] = ("data", "label")
    elif name == "anomaly_injected":
        source = vega_file(INJECTED_SOURCE)
        clean = load_seattle_temps()
        values, labels, injected = inject_anomalies(clean, int(data_cfg.num_anomalies), int(data_cfg.inject_seed))

        def load() -> Series:
            return Series(values, labels)

        columns = ("temp", None)

    elif name == "anomaly_csv":
        if not data_cfg.get("path"):
            raise DataError("data.path: data=anomaly_csv needs a CSV file: data.path=my_series.csv")
        source = Path(str(data_cfg.path)).expanduser()
        value_column, label_column = str(data_cfg.value_column), data_cfg.get("label_column")
        label_column = None if label_column in (None, "") else str(label_column)

        def load() -> Series:
            return read_labelled_csv(source, value_column, label_column, "data.path")

        columns = (value_column, label_column)

    else:
        raise DataError(f"data={name}: no anomaly series of that name; expected mitdb, anomaly_injected, anomaly_csv")
    return AnomalyDataModule(
        name=name,
        load=load,
        source=source,
        window=int(data_cfg.window),
        stride=int(data_cfg.stride),
        val_fraction=float(data_cfg.val_fraction),
        test_fraction=float(data_cfg.test_fraction),
        seed=seed,
        injected=injected,
        columns=columns,
        **common,
    )
