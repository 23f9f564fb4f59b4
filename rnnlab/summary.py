"""What a run leaves for people and programs to read back: ``summary.json`` (its schema, for rnnlab-report, which
relies on these keys), the flat hyperparameters of TensorBoard's HPARAMS tab, and the final metrics logged with
them."""

from __future__ import annotations

import math
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.atomic import write_json
from rnnlab.errors import DivergenceError


def container(node: Any) -> Any:
    """A config node as plain Python (resolved, enums as strings)."""
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def flat_hparams(cfg: DictConfig, seed: int) -> dict[str, Any]:
    """The hyperparameters a person compares runs by, flat and scalar (for TensorBoard's HPARAMS tab)."""
    out: dict[str, Any] = {"seed": seed, "threads": cfg.get("threads")}
    for group in ("model", "task", "data", "optimizer", "scheduler"):
        if cfg.get(group) is None:
            continue
        for key, value in container(cfg[group]).items():
            if isinstance(value, list):
                value = str(value)
            out[f"{group}/{key}"] = value
    for key in ("max_steps", "max_epochs", "precision", "gradient_clip_val"):
        out[f"trainer/{key}"] = cfg.trainer[key]
    return {k: ("null" if v is None else v) for k, v in out.items()}


def log_hparams_with_metrics(trainer: Any, hparams: dict[str, Any], metrics: dict[str, float | None]) -> None:
    """Log the hyperparameters again, now with the run's final metrics (``val/acc`` as ``hparams/val_acc``), so
    that TensorBoard's HPARAMS tab can compare runs by them."""
    from lightning.pytorch.loggers import TensorBoardLogger

    final = {"hparams/" + k.replace("/", "_"): v for k, v in metrics.items() if v is not None}
    if not final:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, metrics=final, step=trainer.global_step)
            logger.finalize("success")  # flush (the writer reopened after the fit closed it)


def count_parameters(model: Any) -> int:
    """The network's trainable numbers: torch parameters, or the NumPy arrays of model.backend=numpy (the task's
    backend counts them; a plain torch module's parameters otherwise)."""
    counter = getattr(getattr(model, "backend", None), "count_parameters", None)
    if counter is not None:
        return counter(model)
    return int(sum(p.numel() for p in model.parameters()))


def step_statistics(step_times: list[float], step_samples: list[int]) -> tuple[float | None, float | None]:
    """(median step in ms, samples per second), skipping the first 5 steps as warm-up when there are more than 10."""
    skip = 5 if len(step_times) > 10 else 0
    times, samples = step_times[skip:], step_samples[skip:]
    if not times or sum(times) <= 0:
        return None, None
    return statistics.median(times) * 1e3, (sum(samples) / sum(times) if samples else None)


def run_summary(
    cfg: DictConfig,
    model: Any,
    trainer: Any,
    seed: int,
    metrics: dict[str, float],
    test_metrics: dict[str, float],
    value: float | None,
    wall_s: float,
    early: Any = ...,
    trial: Any = ...,
) -> dict[str, Any]:
    """The content of ``summary.json``: one run's outcome, for rnnlab-report (which relies on these keys).
    ``early``, ``trial``: :func:`stopped_early` and rnnlab.runtime.pruning.trial_record as the fit left them (read
    before the test split restores a checkpoint's callback states); when not given, read from the trainer now."""
    from rnnlab.callbacks import PeakMemory, Timing
    from rnnlab.provenance import environment
    from rnnlab.runtime.callbacks import RunRecord
    from rnnlab.runtime.pruning import trial_record

    timing = next((c for c in trainer.callbacks if isinstance(c, Timing)), None)
    memory = next((c for c in trainer.callbacks if isinstance(c, PeakMemory)), None)
    record = next((c for c in trainer.callbacks if isinstance(c, RunRecord)), None)
    data = (record.record.get("data") if record is not None else None) or {}
    step_ms, samples_per_s = step_statistics(timing.step_times, timing.step_samples) if timing else (None, None)
    return {
        "status": "interrupted" if trainer.interrupted else "completed",
        "seed": seed,
        "hparams": flat_hparams(cfg, seed),
        "fit_metrics": metrics,
        "test_metrics": test_metrics,
        "optimized_metric": cfg.optimized_metric,
        "optimized_value": value,
        "num_params": count_parameters(model),
        "step_ms_median": step_ms,
        "samples_per_s": samples_per_s,
        "peak_rss_mb": memory.peak_rss_mb if memory else None,
        "peak_rss_delta_mb": memory.peak_rss_delta_mb if memory else None,
        "wall_s": wall_s,
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "stopped_early": stopped_early(trainer) if early is ... else early,
        "optuna_trial": trial_record(trainer) if trial is ... else trial,  # a trial of a pruning Optuna search
        "backend": str(cfg.model.backend),
        "world_size": int(trainer.world_size),  # processes of the run (DDP); samples_per_s is rank 0's share
        "cell": str(cfg.model.cell),
        "task": str(cfg.task.name),
        "data": str(cfg.data.name),
        "data_sha256": data.get("sha256"),  # of the files the data is read from, or of a generator's settings
        "data_sources": data.get("of"),
        "threads": cfg.get("threads"),
        "environment": environment(),  # machine, libraries and builds, thread counts, git commit
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def stopped_early(trainer: Any) -> dict[str, Any] | None:
    """How Lightning's EarlyStopping (``callbacks=early_stopping``) ended the fit, or None when it did not: the
    0-based epoch it stopped in (the ``epoch`` column of metrics.csv), why (``patience_exhausted``,
    ``non_finite_metric``, ...), the monitored metric and its best value."""
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
            best = float(callback.best_score)
            return {
                "epoch": int(callback.stopped_epoch),
                "reason": callback.stopping_reason.name.lower(),
                "monitor": callback.monitor,
                "best": best if math.isfinite(best) else None,
                "patience": int(callback.patience),
                "min_delta": abs(float(callback.min_delta)),
            }
    return None


def failed_summary(
    cfg: DictConfig, model: Any, trainer: Any, seed: int, err: DivergenceError, wall_s: float
) -> dict[str, Any]:
    """summary.json of a run stopped by a divergence: ``status`` "failed", ``error`` (the one line) and
    ``divergence`` (what, value, step, epoch, batch, last good checkpoint); non-finite metrics are written as null."""
    import math

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
    summary = run_summary(cfg, model, trainer, seed, metrics, {}, None, wall_s)  # type: ignore[arg-type]
    summary.update(status="failed", error=str(err).splitlines()[0], divergence=err.details())
    return summary


def interrupted_summary(
    cfg: DictConfig, model: Any, trainer: Any, seed: int, wall_s: float, line: str, details: dict[str, Any]
) -> dict[str, Any]:
    """summary.json of a run a signal ended: ``status`` "interrupted", ``error`` (the one line) and
    ``interrupted`` (signal, step, checkpoint to resume from, its step, where the fit stopped)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    summary = run_summary(cfg, model, trainer, seed, metrics, {}, None, wall_s)
    summary.update(status="interrupted", error=line, interrupted=details)
    return summary


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """``<run_dir>/summary.json``, whole or not at all, non-finite numbers as null."""
    write_json(Path(run_dir) / "summary.json", summary)
