"""What a run prints: Lightning's log messages routed through Hydra's handlers once, the NumPy network's size
(Lightning's model summary counts torch parameters only) and the end-of-run report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def no_advert(record: Any) -> bool:
    return "litlogger" not in record.getMessage()  # Lightning's tip to install a cloud logger


def route_lightning_logs() -> None:
    """Under Hydra the root logger already prints to the console and to the run's log file; drop Lightning's
    own console handler so that each message appears once."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # torch/lightning churn
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            named = logging.getLogger(name)
            for handler in list(named.handlers):
                named.removeHandler(handler)
            named.propagate = True
        for handler in logging.getLogger().handlers:
            if no_advert not in handler.filters:
                handler.addFilter(no_advert)


def log_numpy_summary(net: Any) -> None:
    import logging

    sizes = {name: int(p.size) for name, p in net.params.items()}
    parts = {}
    for name, size in sizes.items():
        parts[name.split(".", 1)[0]] = parts.get(name.split(".", 1)[0], 0) + size
    detail = ", ".join(f"{part} {n:,}" for part, n in parts.items())
    logging.getLogger("rnnlab").info(
        "NumPy network (%s, %s): %s parameters (%s)", net.spec.cell, net.dtype, f"{sum(sizes.values()):,}", detail
    )


def report(
    cfg: DictConfig,
    model: Any,
    trainer: Any,
    run_dir: Path,
    seed: int,
    metrics: dict[str, float],
    test_metrics: dict[str, float],
    early: dict[str, Any] | None = None,
) -> None:
    """The end-of-run summary: test metrics, whether early stopping ended the fit (``early``,
    rnnlab.summary.stopped_early), a generated sample, where the run is and how to look at it."""
    if trainer.global_rank != 0:
        return
    lines = [
        "",
        f"== rnnlab: {cfg.task.name} | {cell_label(cfg.model)} ({cfg.model.backend}) | data={cfg.data.name} "
        f"| seed={seed} ==",
    ]
    shown = {**{k: v for k, v in metrics.items() if k.startswith("val/")}, **test_metrics}
    if shown:
        lines.append("  " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
    if early is not None:
        reason = early["reason"].replace("_", " ")
        best = "" if early["best"] is None else f" (best {early['best']:.4f})"
        lines.append(f"  early stopping: {reason}, {early['monitor']}{best}; the fit ended in epoch {early['epoch']} "
                     f"(0-based; trainer.max_epochs={trainer.max_epochs})")  # fmt: skip
    if "test/bpc" in test_metrics:
        lines.append(f"  test bits per character: {test_metrics['test/bpc']:.4f}")
    if cfg.print_sample and hasattr(model, "generate"):
        t = cfg.task
        sample = model.generate(t.sample_prompt, max(t.sample_length, 1), t.temperature, t.top_k)
        lines += ["", f"-- generated sample (temperature {t.temperature:g}) --", sample, "-- end of sample --"]
    if run_dir.is_dir():
        rel = os.path.relpath(run_dir)
        wrote = (("checkpoints", "checkpoints/"), ("metrics", "csv/metrics.csv"))
        files = [f"{name}: {rel}/{path}" for name, path in wrote if (run_dir / path).exists()]
        lines += ["", f"Run directory: {rel}"]
        if files:
            lines.append("  " + "   ".join(files))
        if (run_dir / "tensorboard").is_dir():
            every = f"(or --logdir {cfg.paths.output_dir} for every run)"
            lines.append(f"  TensorBoard: tensorboard --logdir {rel}   {every}")
    print("\n".join(lines), flush=True)


def cell_label(model: Any) -> str:
    """``lstm``, or ``lstm/peephole`` for a variant other than the standard one."""
    variant = str(model.get("variant", "standard"))
    return str(model.cell) if variant == "standard" else f"{model.cell}/{variant}"
