"""NumPy against PyTorch: pair runs whose configs differ in ``model.backend`` only, and compare each pair."""

from __future__ import annotations

import math

import pandas as pd

CURVE_TAG = "val/loss"  # the curve whose coincidence is checked (train/loss where a run has no validation)


def curve_tolerance(precision: str) -> float:
    """Largest max-abs difference of two loss curves still called "coinciding": float64 runs agree to rounding."""
    return 1e-6 if str(precision) in ("64", "64-true", "double") else 1e-3


def _curve(curves: pd.DataFrame, run: str, tag: str) -> pd.Series:
    values = curves[(curves["run"] == run) & (curves["tag"] == tag)]
    return values.groupby("step")["value"].last()


def _ratio(a: float, b: float) -> float:
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def pair_runs(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per (numpy, torch) pair of completed runs with equal ``config_key``: step-time and memory ratios
    (numpy / torch), each metric's difference (numpy minus torch), and the max abs difference of the loss curves over
    their common steps. Several runs of one config on one backend are paired in run order; unpaired runs are left
    out."""
    done = runs[runs["status"] == "completed"]
    metric_cols = [c for c in runs.columns if c.startswith(("val/", "test/"))]
    rows = []
    for _key, group in done.groupby("config_key", sort=False):
        numpy_runs = group[group["backend"] == "numpy"].sort_values("run")
        torch_runs = group[group["backend"] == "torch"].sort_values("run")
        for (_, n), (_, t) in zip(numpy_runs.iterrows(), torch_runs.iterrows(), strict=False):
            row = {
                "run_numpy": n["run"],
                "run_torch": t["run"],
                "task": n["task"],
                "data": n["data"],
                "cell": n["cell"],
                "layers": n["layers"],
                "directions": n["directions"],
                "hidden_size": n["hidden_size"],
                "seed": n["seed"],
                "precision": n["precision"],
                "step_ms_numpy": n["step_ms"],
                "step_ms_torch": t["step_ms"],
                "time_ratio": _ratio(n["step_ms"], t["step_ms"]),
                "peak_rss_mb_numpy": n["peak_rss_mb"],
                "peak_rss_mb_torch": t["peak_rss_mb"],
                "memory_ratio": _ratio(n["peak_rss_mb"], t["peak_rss_mb"]),
            }
            for col in metric_cols:
                if not (pd.isna(n[col]) and pd.isna(t[col])):
                    row[f"diff {col}"] = n[col] - t[col]
            tag = CURVE_TAG
            a, b = _curve(curves, n["run"], tag), _curve(curves, t["run"], tag)
            if a.empty or b.empty:
                tag = "train/loss"
                a, b = _curve(curves, n["run"], tag), _curve(curves, t["run"], tag)
            common = a.index.intersection(b.index)
            gap = float((a[common] - b[common]).abs().max()) if len(common) else math.nan
            row["curve_tag"] = tag
            row["curve_common_steps"] = len(common)
            row["curve_max_abs_diff"] = gap
            row["curves_coincide"] = bool(gap <= curve_tolerance(n["precision"])) if len(common) else None
            rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        diffs = sorted(c for c in frame.columns if c.startswith("diff "))
        curve_cols = ["curve_tag", "curve_common_steps", "curve_max_abs_diff", "curves_coincide"]
        lead = [c for c in frame.columns if c not in diffs and c not in curve_cols]
        frame = frame[lead + diffs + curve_cols]
        frame = frame.sort_values(["run_numpy", "run_torch"], kind="stable").reset_index(drop=True)
    return frame
