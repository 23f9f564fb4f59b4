"""Time series for task=forecast: data=weather, data=stocks, data=airline.

**Sources** (all offline):

- ``weather``: ``seattle-weather.csv`` of the PyPI package ``vega-datasets``: 1,461 days (2012-01-01 ..
  2015-12-31) of precipitation (mm), temp_max and temp_min (deg C) and wind (m/s). Default target ``temp_max``,
  default inputs the four measurements; ``doy_sin`` / ``doy_cos`` (day of the year on the unit circle,
  2 pi doy / 365.25) can be added with ``data.features``.
- ``stocks``: ``stocks.csv`` of ``vega-datasets``: monthly closing prices 2000-01 .. 2010-03 of MSFT, AMZN, IBM,
  GOOG (from 2004-08) and AAPL; one ticker per run (``data.ticker``). Features computed here (below): ``price``,
  ``log_return``, ``rsi``, ``macd``, ``macd_signal``, ``macd_hist``. Default target ``log_return`` (``price`` is
  the other choice); the test split also reports a long/flat backtest (rnnlab.tasks.forecast).
- ``airline``: the Box & Jenkins (1976) monthly international airline passengers, 1949-01 .. 1960-12, in
  thousands (R's ``AirPassengers``), kept as ``rnnlab/data/files/airline.csv`` (month, passengers); 144 values
  summing to 40,363. ``month_sin`` / ``month_cos`` can be added as inputs.

The files are read directly from the package directory (``importlib.util.find_spec``); the package's own loader
functions are not used, since some of them download.

**Stock features**, with prices P_0 .. P_{n-1}:

- log return r_t = ln(P_t / P_{t-1});
- RSI(14), Wilder's smoothing: with d_t = P_t - P_{t-1}, gains g_t = max(d_t, 0), losses l_t = max(-d_t, 0),
  the averages start as simple means AG_N = (1/N) sum_{t=1..N} g_t (likewise AL_N) and continue as
  AG_t = ((N - 1) AG_{t-1} + g_t) / N (an exponential average with alpha = 1/N: pandas'
  ``ewm(alpha=1/N, adjust=False)`` of the series AG_N, g_{N+1}, g_{N+2}, ...); RSI_t = 100 - 100 / (1 + AG_t /
  AL_t), 100 when AL_t = 0 < AG_t and 50 when both are 0 (flat prices). Defined from t = N;
- MACD(12, 26, 9): EMA_s(x)_0 = x_0, EMA_s(x)_t = a x_t + (1 - a) EMA_s(x)_{t-1} with a = 2 / (s + 1) (pandas'
  ``ewm(span=s, adjust=False)``); line = EMA_12(P) - EMA_26(P), signal = EMA_9(line), histogram = line - signal,
  in price units. The averages are seeded with the first value, so they are defined from the start and their
  seeding bias decays as (1 - a)^t.

Every feature uses past and present prices only (nothing is computed from the future), so computing them over the
whole series before splitting leaks nothing. The first N = 14 months (where the RSI is undefined) are dropped:
109 months remain for AAPL, AMZN, IBM and MSFT, 54 for GOOG.

**Splits and windows.** The rows are split by time: the first 1 - val_fraction - test_fraction of them train, the
next val_fraction validate, the last test_fraction test (sizes rounded to whole rows). Windows lie entirely inside
their split, so no input or target of one split is ever seen in another: window i of a split is the inputs
x = rows [s_i, s_i + window) (every feature) and the targets y = rows [s_i + window, s_i + window + horizon) (the
target columns), predicted all at once (direct multi-step). Training windows start every ``data.stride`` rows
(s_i = i * stride); validation and test windows start at every row (stride 1), so every forecast origin of the
split is scored once and the backtest trades every period.

**Log targets.** With ``data.log_target=true`` the target columns (which must be positive) are replaced by their
natural logarithm before anything else, as inputs and as targets; the task maps forecasts back with exp. With
``data.residual=true`` the task forecasts the change from the last observed target (rnnlab.tasks.forecast).

**Normalization.** Each feature is standardised with the mean and the (population) standard deviation of the
training rows only (a constant feature gets std 1): z = (v - mean) / std. Inputs and targets are normalized
alike (a target is also an input); the network predicts normalized targets, the task reports metrics after
mapping back (v = z std + mean). The statistics travel with the checkpoint (the task's ``series`` hparam).

Batches are (x [B, window, F] float32, y [B, horizon, K] float32) with K target columns.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from rnnlab.data.datamodules import _Loaders
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

AIRLINE_CSV = Path(__file__).parent / "files" / "airline.csv"
TICKERS = ("AAPL", "AMZN", "GOOG", "IBM", "MSFT")
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9

# per source: the columns that can be inputs, the default inputs, the columns that can be targets
COLUMNS: dict[str, tuple[str, ...]] = {
    "weather": ("precipitation", "temp_max", "temp_min", "wind", "doy_sin", "doy_cos"),
    "stocks": ("price", "log_return", "rsi", "macd", "macd_signal", "macd_hist"),
    "airline": ("passengers", "month_sin", "month_cos"),
}
DEFAULT_FEATURES: dict[str, tuple[str, ...]] = {
    "weather": ("precipitation", "temp_max", "temp_min", "wind"),
    "stocks": ("log_return", "rsi", "macd", "macd_signal", "macd_hist"),
    "airline": ("passengers",),
}
TARGETS: dict[str, tuple[str, ...]] = {
    "weather": ("precipitation", "temp_max", "temp_min", "wind"),
    "stocks": ("log_return", "price"),  # what the backtest can turn into a return
    "airline": ("passengers",),
}
# per source: the column of its file that holds the time of a row
TIME_COLUMNS: dict[str, str] = {"weather": "date", "stocks": "date", "airline": "month"}


# --------------------------------------------------------------------------------------------- sources
def vega_file(name: str) -> Path:
    """The path of ``name`` inside the installed vega-datasets package (DataError if it is missing)."""
    spec = importlib.util.find_spec("vega_datasets")
    if spec is None or spec.origin is None:
        raise DataError(f"{name}: the PyPI package vega-datasets is not installed: pip install vega-datasets")
    path = Path(spec.origin).parent / "_data" / name
    if not path.is_file():
        raise DataError(f"{name}: not found in the vega-datasets package ({path}); pip install -U vega-datasets")
    return path


def _cyclic(frame: pd.DataFrame, name: str, phase: np.ndarray) -> None:
    frame[f"{name}_sin"] = np.sin(2 * np.pi * phase)
    frame[f"{name}_cos"] = np.cos(2 * np.pi * phase)


def _doy(frame: pd.DataFrame, times: Any) -> None:
    """doy_sin, doy_cos: the day of the year on the unit circle."""
    _cyclic(frame, "doy", (pd.DatetimeIndex(times).dayofyear.to_numpy() - 1) / 365.25)


def _month(frame: pd.DataFrame, times: Any) -> None:
    """month_sin, month_cos: the month of the year on the unit circle."""
    _cyclic(frame, "month", (pd.DatetimeIndex(times).month.to_numpy() - 1) / 12)


def load_weather() -> pd.DataFrame:
    """Daily Seattle weather, indexed by date, with the measurements and the day-of-year features."""
    path = vega_file("seattle-weather.csv")
    raw = pd.read_csv(path)
    frame = raw.set_index(pd.to_datetime(raw["date"], format="%Y/%m/%d"))[list(DEFAULT_FEATURES["weather"])]
    frame = frame.sort_index().astype(np.float64)
    _doy(frame, frame.index)
    return frame


def load_airline(path: Path = AIRLINE_CSV) -> pd.DataFrame:
    """The 144 monthly airline passenger counts (thousands), indexed by month, with the month-of-year features."""
    if not path.is_file():
        raise DataError(f"data=airline: file not found: {path}")
    raw = pd.read_csv(path)
    frame = raw.set_index(pd.to_datetime(raw["month"], format="%Y-%m"))[["passengers"]].astype(np.float64)
    _month(frame, frame.index)
    return frame


def derive_features(name: str, frame: pd.DataFrame, needed: Sequence[str]) -> pd.DataFrame:
    """The columns of ``needed`` that source ``name`` computes, added to a frame read from a file of the source's
    own layout when it lacks them (rnnlab-predict): ``doy_sin``/``doy_cos`` from ``date`` (weather),
    ``month_sin``/``month_cos`` from ``month`` (airline), the stock features from ``price`` (stocks; its first
    RSI_PERIOD rows are dropped, as in training, and the others keep their row labels). Columns that are there
    already are used as they are; what cannot be computed stays missing, for the caller to name."""
    missing = [c for c in needed if c not in frame.columns]
    time = TIME_COLUMNS.get(name)
    calendar = {"weather": ("doy", _doy), "airline": ("month", _month)}.get(name)
    if calendar is not None and time in frame.columns and any(c.startswith(f"{calendar[0]}_") for c in missing):
        try:
            times = pd.to_datetime(frame[time].astype(str), format="mixed")
        except (ValueError, TypeError) as err:
            raise DataError(f"column {time}: cannot read the times ({str(err).splitlines()[0]})") from None
        out = frame.copy()
        calendar[1](out, times)
        return out
    if name == "stocks" and "price" in frame.columns and any(c in COLUMNS["stocks"] for c in missing):
        prices = pd.to_numeric(frame["price"], errors="coerce")
        if prices.isna().any() or (prices <= 0).any():
            row = int(np.flatnonzero(prices.isna().to_numpy() | (prices <= 0).to_numpy())[0])
            raise DataError(f"column price, row {row + 1}: {frame['price'].iloc[row]!r} is not a positive number")
        derived = stock_features(prices.to_numpy(np.float64), frame.index)
        others = frame.loc[derived.index, [c for c in frame.columns if c not in derived.columns]]
        return pd.concat([others, derived], axis=1)
    return frame


def check_ticker(ticker: str) -> str:
    """The ticker in upper case, or a DataError listing the five."""
    name = str(ticker).upper()
    if name not in TICKERS:
        raise DataError(f"data.ticker={ticker} is not in stocks.csv; choose one of {', '.join(TICKERS)}")
    return name


def load_stocks(ticker: str) -> pd.DataFrame:
    """Monthly prices of one ticker with the computed features, the first RSI_PERIOD months dropped."""
    name = check_ticker(ticker)
    raw = pd.read_csv(vega_file("stocks.csv"))
    rows = raw[raw["symbol"] == name]
    price = pd.Series(rows["price"].to_numpy(np.float64), index=pd.to_datetime(rows["date"], format="%b %d %Y"))
    price = price.sort_index()
    return stock_features(price.to_numpy(), price.index)


def stock_features(prices: np.ndarray, index: Any = None) -> pd.DataFrame:
    """price, log_return, rsi, macd, macd_signal, macd_hist from a price series; the first RSI_PERIOD rows (RSI
    undefined) are dropped."""
    p = np.asarray(prices, dtype=np.float64)
    if len(p) <= RSI_PERIOD:
        raise DataError(f"stocks: {len(p)} prices, the RSI({RSI_PERIOD}) needs more than {RSI_PERIOD}")
    log_return = np.full(len(p), np.nan)
    log_return[1:] = np.log(p[1:] / p[:-1])
    line, signal, hist = macd(p)
    frame = pd.DataFrame(
        {"price": p, "log_return": log_return, "rsi": rsi(p), "macd": line, "macd_signal": signal, "macd_hist": hist},
        index=index,
    )
    return frame.iloc[RSI_PERIOD:]


def rsi(prices: np.ndarray, period: int = RSI_PERIOD) -> np.ndarray:
    """Wilder's relative strength index (formula in the module docstring); NaN for the first ``period`` values."""
    p = np.asarray(prices, dtype=np.float64)
    out = np.full(len(p), np.nan)
    d = np.diff(p)
    if len(d) < period:
        return out
    avg_gain = wilder_average(np.maximum(d, 0.0), period)  # [t] averages the changes up to d[t + period - 1]
    avg_loss = wilder_average(np.maximum(-d, 0.0), period)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    out[period:] = np.where(avg_loss == 0.0, np.where(avg_gain > 0.0, 100.0, 50.0), value)
    return out


def wilder_average(values: np.ndarray, period: int) -> np.ndarray:
    """Wilder's smoothing of ``values`` (len >= period): the mean of the first ``period`` values, then
    A_t = ((period - 1) A_{t-1} + x_t) / period, computed as pandas' ``ewm(alpha=1/period, adjust=False)`` of the
    series [mean(x_0 .. x_{period-1}), x_period, x_period+1, ...]; one value per position from period - 1 on."""
    x = np.asarray(values, dtype=np.float64)
    seeded = pd.Series(np.concatenate([[x[:period].mean()], x[period:]]))
    return seeded.ewm(alpha=1.0 / period, adjust=False).mean().to_numpy()


def ema(values: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average with a = 2 / (span + 1), seeded with the first value: pandas'
    ``ewm(span=span, adjust=False)``, EMA_0 = x_0 and EMA_t = a x_t + (1 - a) EMA_{t-1}."""
    x = np.asarray(values, dtype=np.float64)
    return pd.Series(x).ewm(span=span, adjust=False).mean().to_numpy()


def macd(
    prices: np.ndarray, fast: int = MACD_FAST, slow: int = MACD_SLOW, signal: int = MACD_SIGNAL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MACD line, signal line, histogram), in price units."""
    line = ema(prices, fast) - ema(prices, slow)
    sig = ema(line, signal)
    return line, sig, line - sig


# ------------------------------------------------------------------------------------- splits, windows
def split_bounds(n: int, val_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """Row ranges [start, stop) of train, val, test, in time order."""
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    n_train = n - n_val - n_test
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}


def window_starts(rows: int, window: int, horizon: int, stride: int = 1) -> np.ndarray:
    """First rows of the windows (inputs then targets: window + horizon rows) inside ``rows`` rows."""
    return np.arange(0, max(rows - window - horizon + 1, 0), stride, dtype=np.int64)


@dataclass
class Scaler:
    """Per-feature standardisation z = (v - mean) / std with statistics of the training rows."""

    mean: np.ndarray  # [F] float64
    std: np.ndarray  # [F] float64, never 0

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        v = np.asarray(values, dtype=np.float64)
        std = v.std(axis=0)
        return cls(v.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std


class SeriesWindows(Dataset):
    """The windows of one split. ``values`` holds the split's normalized rows [n, F] once; ``collate`` gathers a
    batch of windows with one index operation."""

    def __init__(
        self,
        values: np.ndarray,
        target_index: Sequence[int],
        starts: np.ndarray,
        window: int,
        horizon: int,
        times: np.ndarray | None = None,
    ):
        self.values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        self.target_index = torch.as_tensor(list(target_index), dtype=torch.long)
        self.starts = torch.from_numpy(np.asarray(starts, dtype=np.int64))
        self.window = window
        self.horizon = horizon
        self.times = times  # [n] datetime64 of the split's rows, for plots

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self.starts[torch.as_tensor(indices)]
        x = self.values[starts[:, None] + torch.arange(self.window)]
        rows = starts[:, None] + self.window + torch.arange(self.horizon)
        y = self.values[rows][..., self.target_index]
        return x, y

    def target_times(self, step: int = 0) -> np.ndarray | None:
        """The time of every window's target at horizon step ``step`` (0-based), or None without times."""
        if self.times is None:
            return None
        return self.times[self.starts.numpy() + self.window + step]


# ---------------------------------------------------------------------------------------- data module
class ForecastDataModule(_Loaders):
    """Windows of a multivariate series for task=forecast (see the module docstring).

    After ``setup``: ``splits`` (SeriesWindows), ``scaler``, ``input_features`` (F), ``num_outputs``
    (horizon * K) and ``series_info()``, the facts the task saves with its checkpoint.
    """

    def __init__(
        self,
        name: str,
        load: Callable[[], pd.DataFrame],
        features: Sequence[str],
        targets: Sequence[str],
        window: int,
        horizon: int,
        stride: int,
        val_fraction: float,
        test_fraction: float,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        backtest: str | None = None,
        log_target: bool = False,
        residual: bool = False,
        source: Path | None = None,
        time_column: str | None = None,
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.name = name
        self.load = load
        self.source = source
        self.targets = list(targets)
        self.features = list(features) + [t for t in self.targets if t not in features]  # a target is an input
        self.target_index = [self.features.index(t) for t in self.targets]
        self.window, self.horizon, self.stride = window, horizon, stride
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.backtest = backtest
        self.log_target = log_target
        self.residual = residual
        self.time_column = time_column
        self.vocab = CharVocab([])  # float inputs: no symbols
        self.input_features = len(self.features)
        self.num_outputs = horizon * len(self.targets)
        self.scaler: Scaler | None = None
        self.bounds: dict[str, tuple[int, int]] = {}

    def source_files(self) -> list[Path]:
        return [self.source] if self.source is not None else []

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        frame = self.load()
        values = frame[self.features].to_numpy(np.float64, copy=True)
        if not np.isfinite(values).all():
            raise DataError(f"data={self.name}: the series holds missing or infinite values")
        if self.log_target:
            target_values = values[:, self.target_index]
            if (target_values <= 0).any():
                bad = self.targets[int(np.nonzero((target_values <= 0).any(axis=0))[0][0])]
                raise DataError(f"data.log_target=true: data={self.name} column {bad} has values <= 0")
            values[:, self.target_index] = np.log(target_values)
        times = frame.index.to_numpy() if isinstance(frame.index, pd.DatetimeIndex) else None
        self.bounds = split_bounds(len(values), self.val_fraction, self.test_fraction)
        need = self.window + self.horizon
        for split, (start, stop) in self.bounds.items():
            if stop - start < need:
                raise DataError(
                    f"data.window={self.window} + data.horizon={self.horizon} = {need} rows do not fit in the "
                    f"{split} split of data={self.name} ({stop - start} of {len(values)} rows); use a shorter "
                    "data.window or data.horizon, or change data.val_fraction / data.test_fraction"
                )
        train_start, train_stop = self.bounds["train"]
        self.scaler = Scaler.fit(values[train_start:train_stop])
        normalized = self.scaler.transform(values)
        self.splits = {
            split: SeriesWindows(
                normalized[start:stop],
                self.target_index,
                window_starts(stop - start, self.window, self.horizon, self.stride if split == "train" else 1),
                self.window,
                self.horizon,
                None if times is None else times[start:stop],
            )
            for split, (start, stop) in self.bounds.items()
        }

    def series_info(self) -> dict[str, Any]:
        """What predictions need to be read in original units; saved with the task's checkpoint."""
        if self.scaler is None:
            raise RuntimeError("series_info() needs setup() first")
        idx = self.target_index
        return {
            "data": self.name,
            "features": list(self.features),
            "targets": list(self.targets),
            "target_index": list(idx),
            "window": self.window,
            "horizon": self.horizon,
            "feature_mean": self.scaler.mean.tolist(),
            "feature_std": self.scaler.std.tolist(),
            "target_mean": self.scaler.mean[idx].tolist(),
            "target_std": self.scaler.std[idx].tolist(),
            "backtest": self.backtest,
            "log_target": self.log_target,
            "residual": self.residual,
            "time_column": self.time_column,
        }


def _names(value: Any) -> list[str]:
    """A list of column names from a list or a comma-separated string."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def build_forecast(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> ForecastDataModule:
    """data=weather | stocks | airline."""
    name = str(data_cfg.name)
    if name not in COLUMNS:
        raise DataError(f"data={name}: no time series of that name; expected one of {', '.join(sorted(COLUMNS))}")
    for key in ("window", "horizon", "stride"):
        if int(data_cfg[key]) < 1:
            raise DataError(f"data.{key} must be >= 1, got {data_cfg[key]}")
    features = _names(data_cfg.get("features")) or list(DEFAULT_FEATURES[name])
    targets = _names(data_cfg.target)
    for key, names, allowed in (("features", features, COLUMNS[name]), ("target", targets, TARGETS[name])):
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise DataError(f"data.{key}={','.join(unknown) or '(empty)'}: data={name} offers {', '.join(allowed)}")
    backtest = None
    load: Callable[[], pd.DataFrame]
    if name == "weather":
        load, source = load_weather, vega_file("seattle-weather.csv")
    elif name == "airline":
        load, source = load_airline, AIRLINE_CSV
    else:
        source = vega_file("stocks.csv")
        ticker = check_ticker(data_cfg.ticker)
        if len(targets) != 1:
            raise DataError(f"data.target={','.join(targets)}: data=stocks forecasts one of log_return, price")
        backtest = targets[0]

        def load() -> pd.DataFrame:
            return load_stocks(ticker)

    return ForecastDataModule(
        name=name,
        load=load,
        source=source,
        features=features,
        targets=targets,
        window=int(data_cfg.window),
        horizon=int(data_cfg.horizon),
        stride=int(data_cfg.stride),
        val_fraction=float(data_cfg.val_fraction),
        test_fraction=float(data_cfg.test_fraction),
        seed=seed,
        backtest=backtest,
        log_target=bool(data_cfg.get("log_target", False)),
        residual=bool(data_cfg.get("residual", False)),
        time_column=TIME_COLUMNS[name],
        **common,
    )
