"""Labelled series for task=anomaly: data=mitdb, anomaly_injected, anomaly_csv (rnnlab.data.anomaly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.registry import DATASETS
from rnnlab.specs import positive, split_fractions


@dataclass
class AnomalyDataConfig(DataConfig):
    """A univariate series with 0/1 labels per step; see rnnlab.data.anomaly."""

    window: int = 64  # steps of context before each predicted step
    stride: int = 4  # steps between the starts of training windows; val/test score every step
    val_fraction: float = 0.15  # split by time: train, then val, then test
    test_fraction: float = 0.15


@dataclass
class InjectedConfig(AnomalyDataConfig):
    num_anomalies: int = 40  # events injected, one per 1/num_anomalies of the series
    inject_seed: int = 0  # the generator's seed (independent of the run's seed)


@dataclass
class AnomalyCsvConfig(AnomalyDataConfig):
    path: str | None = None  # the CSV file
    value_column: str = "value"
    label_column: str | None = None  # a 0/1 column; null: no labels (scores only)


def check(cfg: Any) -> None:
    for key in ("data.window", "data.stride"):
        positive(cfg, key)
    split_fractions(cfg)
    if cfg.data.name == "anomaly_injected":
        positive(cfg, "data.num_anomalies")
    if cfg.data.name == "anomaly_csv" and not cfg.data.get("path"):
        raise ConfigError("data.path: data=anomaly_csv needs a CSV file: data.path=my_series.csv")


for _name, _schema, _doc in (
    ("mitdb", AnomalyDataConfig, "MIT-BIH ECG record, 7,500 samples with one labelled anomalous beat (sktime's file)"),
    ("anomaly_injected", InjectedConfig, "hourly Seattle temperatures 2010 (vega-datasets) with injected anomalies"),
    ("anomaly_csv", AnomalyCsvConfig, "your CSV: data.path, data.value_column, optional 0/1 data.label_column"),
):
    DATASETS.add(
        _name,
        target="rnnlab.data.anomaly:build_anomaly",
        schema=_schema,
        kind="anomaly",
        check=check,
        doc=_doc,
    )
