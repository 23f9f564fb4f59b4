"""Several seeds of one configuration: the mean, standard deviation and 95 % interval of each metric per
configuration and backend, and the two backends compared seed by seed.

A configuration is the resolved config without its seed and backend (its hash is ``setting_hash``, from
:func:`rnnlab.report.collect.config_key`). Only completed runs count. The interval is Student's t interval of the
mean, mean ± t(0.975, n - 1) · sd / √n, with the sample standard deviation (n - 1 in the denominator); the paired
comparison applies the same interval to the per-seed differences NumPy minus PyTorch, so that the seed's share of
the variation (the initial weights, the batch order) cancels.
"""

from __future__ import annotations

import math

import pandas as pd

LABEL_COLUMNS = ["task", "data", "cell", "variant", "layers", "hidden_size", "optimizer", "lr", "num_params"]


def t975(n: int) -> float:
    """The 0.975 quantile of Student's t distribution with ``n - 1`` degrees of freedom (NaN below n = 2)."""
    if n < 2:
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def interval(values: pd.Series) -> dict[str, float]:
    """n, mean, sd (n - 1), and the 95 % t interval of the mean of ``values`` (NaN left out)."""
    values = values.dropna().astype(float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    sd = float(values.std(ddof=1)) if n > 1 else math.nan
    half = t975(n) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def seed_metrics(runs: pd.DataFrame) -> list[str]:
    """The metrics aggregated over seeds: every test metric, and the best value of each monitored metric."""
    tests = sorted(c for c in runs.columns if c.startswith("test/"))
    monitors = [f"{m}_best" for m in runs.get("monitor", pd.Series(dtype=object)).dropna().unique()]
    return [c for c in tests + sorted(set(monitors)) if c in runs.columns and runs[c].notna().any()]


def _label(group: pd.DataFrame) -> dict[str, object]:
    first = group.iloc[0]
    return {c: first.get(c) for c in LABEL_COLUMNS if c in group.columns}


def over_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, backend) with at least one completed run: the seeds, and per metric its n,
    mean, sd and 95 % interval (columns ``<metric> mean`` and so on)."""
    done = runs[runs["status"] == "completed"]
    metrics = seed_metrics(runs)
    rows = []
    for (setting, backend), group in done.groupby(["setting_hash", "backend"], sort=False):
        row: dict[str, object] = {"setting_hash": setting, "backend": backend, **_label(group)}
        seeds = sorted(int(s) for s in group["seed"].dropna())
        row["seeds"] = ",".join(map(str, seeds))
        row["n"] = len(group)
        for metric in metrics:
            for name, value in interval(group[metric]).items():
                if name != "n":
                    row[f"{metric} {name}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def paired_backends(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration run on both backends with at least one common seed: per metric, the mean
    difference NumPy minus PyTorch over the common seeds, its sd and 95 % interval, and each backend's mean over
    those seeds. Where a backend has two completed runs of one seed, the later run (by run id) counts."""
    done = runs[runs["status"] == "completed"].sort_values("run", kind="stable")
    metrics = seed_metrics(runs)
    rows = []
    for setting, group in done.groupby("setting_hash", sort=False):
        by_backend = {b: g.drop_duplicates("seed", keep="last").set_index("seed") for b, g in group.groupby("backend")}
        if "numpy" not in by_backend or "torch" not in by_backend:
            continue
        numpy_runs, torch_runs = by_backend["numpy"], by_backend["torch"]
        common = sorted(set(numpy_runs.index) & set(torch_runs.index))
        if not common:
            continue
        row: dict[str, object] = {"setting_hash": setting, **_label(group), "seeds": ",".join(map(str, common)),
                                  "pairs": len(common)}  # fmt: skip
        for metric in metrics:
            diff = numpy_runs.loc[common, metric].astype(float) - torch_runs.loc[common, metric].astype(float)
            stats = interval(diff)
            row[f"{metric} numpy"] = float(numpy_runs.loc[common, metric].astype(float).mean())
            row[f"{metric} torch"] = float(torch_runs.loc[common, metric].astype(float).mean())
            row[f"{metric} diff"] = stats["mean"]
            row[f"{metric} diff sd"] = stats["sd"]
            row[f"{metric} diff ci_low"] = stats["ci_low"]
            row[f"{metric} diff ci_high"] = stats["ci_high"]
        rows.append(row)
    return pd.DataFrame(rows)
