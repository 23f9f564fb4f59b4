"""Find run directories and load them into pandas DataFrames: one row per run, and the long-format curves.

A run directory holds ``config_resolved.yaml`` or ``.hydra/config.yaml``, plus ``csv/`` or ``tensorboard/`` (or a
``summary.json``). Its ``summary.json`` is written at the successful end of a run; a run without one is listed as
incomplete, with the last step and epoch its metrics reached. Every value missing from the summary falls back to
the CSV (or to the TensorBoard events where there is no CSV). An earlier attempt kept as ``<run>.partial-N`` beside
the run that replaced it (a resumed sweep, scripts/published.py) is no run of its own: it is read only when named.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from rnnlab.errors import RnnlabError

PARTIAL = re.compile(r"\.partial-\d+$")  # <run>.partial-N: a stopped attempt kept beside the run that replaced it
MARKER = ".rnnlab-report"  # a file in every report directory: marks it as safe to replace, and not a run
CURVE_COLUMNS = ["run", "step", "epoch", "tag", "value"]
# Lower is better when a token of the metric's name (split at "_") is one of these, higher for the other set.
MIN_TOKENS = {"loss", "bpc", "ppl", "mae", "rmse", "mape", "mse", "error", "err"}
MAX_TOKENS = {"acc", "f1", "auroc", "bleu", "match", "precision", "recall", "accuracy"}
# Keys of the resolved config that say where a run is, not what it computes: dropped before runs are compared.
PATH_KEYS = {"paths", "hydra", "save_dir", "dirpath", "default_root_dir", "output_dir", "run_dir", "cache_dir",
             "root_dir", "log_dir", "ckpt_path", "resume_sweep"}  # fmt: skip


class ReportError(RnnlabError):
    """A readable one-line problem with the report's input or output (missing path, no runs, unsafe --out)."""


class Collected(NamedTuple):
    """``runs``: one row per run; ``curves``: columns run, step, epoch, tag, value (every logged scalar)."""

    runs: pd.DataFrame
    curves: pd.DataFrame


def is_run_dir(path: Path) -> bool:
    has_config = (path / "config_resolved.yaml").is_file() or (path / ".hydra" / "config.yaml").is_file()
    has_logs = (path / "csv").is_dir() or (path / "tensorboard").is_dir() or (path / "summary.json").is_file()
    return has_config and has_logs


def find_run_dirs(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Every run directory at or below ``paths``, sorted; raises ReportError naming a path that does not exist."""
    for p in paths:
        if not Path(p).exists():
            raise ReportError(f"no such file or directory: {p}")
    found: set[Path] = set()
    for p in paths:
        top = Path(p).resolve()
        for root, dirs, _files in os.walk(top):
            here = Path(root)
            if (here / MARKER).is_file():  # a report, perhaps written inside the outputs it reads
                dirs[:] = []
                continue
            if is_run_dir(here):
                found.add(here)
                dirs[:] = []  # no run lives inside another one (checkpoints/, figures/, csv/ ...)
            else:  # not hidden directories, nor an earlier attempt set aside (rnnlab.runtime.rundir.set_aside)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not PARTIAL.search(d))
    return sorted(found)


def metric_mode(tag: str) -> str | None:
    """Which end of a metric is best, "min" or "max", from its name (``val/bpc`` -> min); None when unknown."""
    tokens = set(tag.rsplit("/", 1)[-1].lower().split("_"))
    if tokens & MIN_TOKENS:
        return "min"
    if tokens & MAX_TOKENS:
        return "max"
    return None


def read_config(run_dir: Path) -> tuple[dict[str, Any], int | None]:
    """The resolved config (``config_resolved.yaml``, else Hydra's copy) and the seed used, where recorded."""
    import yaml

    path = run_dir / "config_resolved.yaml"
    if not path.is_file():
        path = run_dir / ".hydra" / "config.yaml"
    text = path.read_text()
    seed = None
    match = re.match(r"#\s*seed used:\s*(-?\d+)", text)
    if match:
        seed = int(match.group(1))
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ReportError(f"cannot read {path}: {str(err).splitlines()[0]}") from err
    if not isinstance(cfg, dict):
        raise ReportError(f"cannot read {path}: not a mapping")
    if seed is None and isinstance(cfg.get("seed"), int):
        seed = cfg["seed"]
    return cfg, seed


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``summary.json``, or {} when there is none (or it cannot be parsed: a run killed mid-write)."""
    path = run_dir / "summary.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_curves(run_dir: Path) -> pd.DataFrame:
    """Every scalar of the run in long format (step, epoch, tag, value): ``csv/metrics.csv``, else TensorBoard."""
    csv = run_dir / "csv" / "metrics.csv"
    if csv.is_file():
        try:
            wide = pd.read_csv(csv)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            wide = pd.DataFrame()
        if "step" in wide.columns:
            epoch = wide["epoch"] if "epoch" in wide.columns else float("nan")
            wide = wide.assign(epoch=epoch)
            value_cols = [c for c in wide.columns if c not in ("step", "epoch")]
            long = wide.melt(id_vars=["step", "epoch"], value_vars=value_cols, var_name="tag", value_name="value")
            long = long.dropna(subset=["value"])
            long = long[pd.to_numeric(long["value"], errors="coerce").notna()]
            return long.astype({"step": "int64", "epoch": "float64", "value": "float64"})[CURVE_COLUMNS[1:]]
    if (run_dir / "tensorboard").is_dir():
        return _read_tensorboard(run_dir / "tensorboard")
    return pd.DataFrame({"step": pd.Series(dtype="int64"), "epoch": pd.Series(dtype="float64"),
                         "tag": pd.Series(dtype="object"), "value": pd.Series(dtype="float64")})  # fmt: skip


def _read_tensorboard(directory: Path) -> pd.DataFrame:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows: list[tuple[int, str, float]] = []
    for events in sorted(directory.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            rows += [(int(e.step), tag, float(e.value)) for e in acc.Scalars(tag)]
    frame = pd.DataFrame(rows, columns=["step", "tag", "value"]).astype({"step": "int64", "value": "float64"})
    epochs = frame[frame["tag"] == "epoch"].groupby("step")["value"].last()  # Lightning logs the epoch as a scalar
    frame = frame[frame["tag"] != "epoch"]
    frame.insert(1, "epoch", frame["step"].map(epochs).astype("float64"))
    return frame.reset_index(drop=True)


def config_key(cfg: dict[str, Any], seed: int | None) -> str:
    """The resolved config as canonical JSON with model.backend, paths, Hydra's and output-dir keys removed (and the
    seed actually used): two runs with equal keys differ in their backend only."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in PATH_KEYS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    clean = strip(cfg)
    if isinstance(clean.get("model"), dict):
        clean["model"].pop("backend", None)
    if clean.get("scheduler") == {"name": "none"}:  # the default: the same key as a run from before the group
        clean.pop("scheduler")
    clean["seed"] = seed
    return json.dumps(clean, sort_keys=True, default=str)


def _params_from_checkpoint(run_dir: Path) -> float:
    """Parameter count from ``checkpoints/last.ckpt`` (torch state_dict or the NumPy arrays); NaN if none."""
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: (p.name != "last.ckpt", p.name))
    if not ckpts:
        return math.nan
    import torch

    try:
        saved = torch.load(ckpts[0], map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # a checkpoint cut short by a crash
        return math.nan
    arrays = saved.get("numpy_backend") or saved.get("state_dict") or {}

    def count(node: Any) -> int:
        if isinstance(node, dict):
            return sum(count(v) for v in node.values())
        return int(node.numel()) if hasattr(node, "numel") else int(getattr(node, "size", 0) or 0)

    return float(count(arrays)) or math.nan


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def run_row(run_dir: Path, run_id: str, curves: pd.DataFrame) -> dict[str, Any]:
    """The per-run row: what ran (from the config, or the summary's hparams), how it ended, its metrics."""
    cfg, seed = read_config(run_dir)
    summary = read_summary(run_dir)
    hp = summary.get("hparams") if isinstance(summary.get("hparams"), dict) else {}

    def pick(hp_key: str, *cfg_keys: str) -> Any:
        value = _get(cfg, *cfg_keys)
        return hp.get(hp_key) if value is None else value

    status = str(summary.get("status", "incomplete")) if summary else "incomplete"
    bidirectional = pick("model/bidirectional", "model", "bidirectional")
    row: dict[str, Any] = {
        "run": run_id,
        "status": status,
        "backend": summary.get("backend") or pick("model/backend", "model", "backend"),
        "cell": summary.get("cell") or pick("model/cell", "model", "cell"),
        "variant": pick("model/variant", "model", "variant"),
        "layers": pick("model/num_layers", "model", "num_layers"),
        "directions": None if bidirectional is None else (2 if str(bidirectional).lower() == "true" else 1),
        "hidden_size": pick("model/hidden_size", "model", "hidden_size"),
        "task": summary.get("task") or pick("task/name", "task", "name"),
        "data": summary.get("data") or pick("data/name", "data", "name"),
        "optimizer": pick("optimizer/name", "optimizer", "name"),
        "lr": _num(pick("optimizer/lr", "optimizer", "lr")),
        "seed": summary.get("seed", seed),
        "precision": str(pick("trainer/precision", "trainer", "precision")),
        "num_params": _num(summary.get("num_params")),
    }
    if math.isnan(row["num_params"]):
        row["num_params"] = _params_from_checkpoint(run_dir)
    monitor, mode = _get(cfg, "task", "monitor"), _get(cfg, "task", "mode")
    row["monitor"] = monitor

    fit = summary.get("fit_metrics") if isinstance(summary.get("fit_metrics"), dict) else {}
    val = curves[curves["tag"].str.startswith("val/")]
    for tag in sorted(set(val["tag"]) | {k for k in fit if k.startswith("val/")}):
        series = val.loc[val["tag"] == tag].sort_values("step", kind="stable")["value"]
        how = metric_mode(tag) or (mode if tag == monitor else None)
        final = series.iloc[-1] if len(series) else _num(fit.get(tag))
        best = (series.min() if how == "min" else series.max()) if how and len(series) else math.nan
        row[f"{tag}_best"], row[f"{tag}_final"] = best, final

    tests = summary.get("test_metrics") if isinstance(summary.get("test_metrics"), dict) else {}
    if not tests:
        logged = curves[curves["tag"].str.startswith("test/")].sort_values("step", kind="stable")
        tests = logged.groupby("tag")["value"].last().to_dict()
    for tag, value in sorted(tests.items()):
        row[tag] = _num(value)

    def median_of(tag: str) -> float:
        values = curves.loc[curves["tag"] == tag, "value"]
        return float(values.median()) if len(values) else math.nan

    row["step_ms"] = _num(summary.get("step_ms_median"))
    if math.isnan(row["step_ms"]):
        row["step_ms"] = median_of("time/step_ms")
    row["samples_per_s"] = _num(summary.get("samples_per_s"))
    if math.isnan(row["samples_per_s"]):
        row["samples_per_s"] = median_of("throughput/samples_per_s")
    row["peak_rss_mb"] = _num(summary.get("peak_rss_mb"))
    row["peak_rss_delta_mb"] = _num(summary.get("peak_rss_delta_mb"))
    row["wall_s"] = _num(summary.get("wall_s"))
    row["last_step"] = int(curves["step"].max()) if len(curves) else None
    epochs = curves["epoch"].dropna()
    row["last_epoch"] = int(epochs.max()) if len(epochs) else None
    if summary.get("global_step") is not None:
        row["last_step"] = int(summary["global_step"])
    if row["last_epoch"] is None and summary.get("epochs") is not None:
        row["last_epoch"] = int(summary["epochs"])
    row["error"] = str(summary["error"]).strip().splitlines()[0] if summary.get("error") else None
    key = config_key(cfg, row["seed"])
    row["config_key"] = key
    row["config_hash"] = hashlib.sha1(key.encode()).hexdigest()[:10]
    setting = config_key(cfg, None)  # the configuration without its seed: what the seeds of one setting share
    row["setting_hash"] = hashlib.sha1(setting.encode()).hexdigest()[:10]
    row["path"] = str(run_dir)
    return row


def _run_ids(run_dirs: list[Path]) -> list[str]:
    """Each run's path relative to the common parent of all runs (its own name when there is only one)."""
    if len(run_dirs) == 1:
        return [run_dirs[0].name]
    common = Path(os.path.commonpath([str(p) for p in run_dirs]))
    return [p.relative_to(common).as_posix() for p in run_dirs]


def collect_runs(paths: list[str | os.PathLike[str]]) -> Collected:
    """Load every run at or below ``paths`` (run dirs, sweep dirs, outputs/): see :class:`Collected`.

    Raises ReportError when a path is missing or no run is found.
    """
    run_dirs = find_run_dirs(paths)
    if not run_dirs:
        raise ReportError(f"no run directories found under {', '.join(str(p) for p in paths)}")
    rows, curves = [], []
    for run_dir, run_id in zip(run_dirs, _run_ids(run_dirs), strict=True):
        run_curves = read_curves(run_dir)
        rows.append(run_row(run_dir, run_id, run_curves))
        curves.append(run_curves.assign(run=run_id)[CURVE_COLUMNS])
    runs = pd.DataFrame(rows)
    # Lead columns in a fixed order, then the metrics in sorted order, bookkeeping last.
    tail = ["step_ms", "samples_per_s", "peak_rss_mb", "peak_rss_delta_mb", "wall_s", "last_step", "last_epoch",
            "error", "monitor", "config_hash", "setting_hash", "config_key", "path"]  # fmt: skip
    head = [c for c in runs.columns if c not in tail and "/" not in c]
    metrics = sorted(c for c in runs.columns if "/" in c)
    runs = runs[head + metrics + tail]
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS)
    curves_df = curves_df.sort_values(["run", "tag", "step"], kind="stable").reset_index(drop=True)
    return Collected(runs=runs, curves=curves_df)
