"""Pictures that tasks and experiments log: a matplotlib figure goes to TensorBoard (IMAGES tab) and, as a PNG,
to ``<run dir>/figures/<tag>/step_<global step>.png`` for the report.

matplotlib is imported here only (Agg backend, no screen needed), and only when a picture is made.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def new_figure(width: float = 6.0, height: float = 4.0) -> Any:
    """A matplotlib Figure that is not registered with pyplot (no global state, nothing to close)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_dir(trainer: Any) -> Path | None:
    root = getattr(trainer, "default_root_dir", None)
    return Path(root) / "figures" if root else None


def log_figure(module: Any, tag: str, fig: Any) -> Path | None:
    """Send ``fig`` to every TensorBoard logger of ``module``'s trainer and save it as a PNG; returns the path.

    Only rank 0 writes; during the sanity check nothing is written.
    """
    trainer = getattr(module, "_trainer", None)
    if trainer is None or trainer.sanity_checking or trainer.global_rank != 0:
        return None
    from lightning.pytorch.loggers import TensorBoardLogger

    step = int(module.global_step)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, global_step=step, close=False)
    path = None
    directory = figure_dir(trainer)
    if directory is not None and not trainer.fast_dev_run:
        path = directory / re.sub(r"[^A-Za-z0-9_.-]+", "_", tag) / f"step_{step:07d}.png"
        from rnnlab.atomic import atomic_file

        with atomic_file(path, "wb") as fh:
            fig.savefig(fh, format="png")
    return path
