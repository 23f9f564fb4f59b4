"""Time series for task=forecast: data=weather, airline, stocks (rnnlab.data.timeseries)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.registry import DATASETS
from rnnlab.specs import MISSING, positive, split_fractions


@dataclass
class ForecastDataConfig(DataConfig):
    """A time series for task=forecast (weather, airline; stocks adds a ticker); see rnnlab.data.timeseries."""

    window: int = 28  # rows of inputs per window
    horizon: int = 7  # rows forecast at once (direct multi-step)
    stride: int = 1  # rows between the starts of training windows; val/test windows start at every row
    target: str = MISSING  # column to forecast; several separated by commas
    features: list[str] | None = None  # input columns (None: the source's defaults); the target is always one
    val_fraction: float = 0.15  # split by time: train, then val, then test
    test_fraction: float = 0.15
    log_target: bool = False  # model ln(target): a multiplicative trend and season become additive (targets > 0)
    residual: bool = False  # forecast the change from the last observed target: persistence + a learned correction


@dataclass
class StocksConfig(ForecastDataConfig):
    ticker: str = "AAPL"  # one of AAPL, AMZN, GOOG, IBM, MSFT


def check(cfg: Any) -> None:
    for key in ("data.window", "data.horizon", "data.stride"):
        positive(cfg, key)
    split_fractions(cfg)


for _name, _schema, _doc in (
    ("weather", ForecastDataConfig, "Seattle daily weather 2012-2015 (vega-datasets)"),
    ("airline", ForecastDataConfig, "Box & Jenkins monthly airline passengers 1949-1960"),
    ("stocks", StocksConfig, "monthly prices 2000-2010 of one data.ticker with RSI and MACD (vega-datasets)"),
):
    DATASETS.add(
        _name,
        target="rnnlab.data.timeseries:build_forecast",
        schema=_schema,
        kind="forecast",
        check=check,
        doc=_doc,
    )
