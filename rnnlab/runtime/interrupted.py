"""The end of a run that a signal stopped (rnnlab.runtime.signals): what summary.json says, and the one line with
the command that resumes it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rnnlab.checks import load_checkpoint
from rnnlab.errors import ConfigError


def end_interrupted(
    cfg: DictConfig, model: Any, trainer: Any, seed: int, stop: Any, run_dir: Path, started: float, err: Any
) -> None:
    """A signal ended the run: summary.json says so (and where to resume from); raise RunInterrupted with the one
    line for the user. Under a SLURM launcher the preemption signal is then handed to submitit, which requeues."""
    from rnnlab.callbacks import last_good_checkpoint
    from rnnlab.runtime.resume import resume_command
    from rnnlab.runtime.signals import RunInterrupted, signal_name
    from rnnlab.summary import interrupted_summary, write_summary

    signals = stop.signals
    signum = signals.signum or getattr(err, "signum", None) or 15
    checkpoint = stop.saved or last_checkpoint(trainer) or last_good_checkpoint(trainer)
    if checkpoint is not None and not Path(checkpoint).is_file():
        checkpoint = None
    step = int(trainer.global_step)
    ckpt_step = checkpoint_step(checkpoint) if checkpoint else None
    where = f"step {step}" + (" (during validation)" if stop.mid_validation else "")
    if checkpoint is None:
        resume = "no checkpoint was written, so a new run starts from scratch"
    else:
        resume = f"resume: {resume_command(cfg, checkpoint)}"
        if ckpt_step is not None and ckpt_step != step:
            resume = f"the last checkpoint is from step {ckpt_step}; {resume}"
    line = f"interrupted by {signal_name(signum)} at {where}; {resume}"
    if trainer.global_rank == 0:
        details = {"signal": signal_name(signum), "step": step, "checkpoint": checkpoint, "checkpoint_step": ckpt_step,
                   "stopped": stop.stop_point}  # fmt: skip
        wall_s = time.perf_counter() - started
        write_summary(run_dir, interrupted_summary(cfg, model, trainer, seed, wall_s, line, details))
    if signals.is_preemption:
        signals.requeue()
    raise RunInterrupted(signum, line) from (err if isinstance(err, BaseException) else None)


def last_checkpoint(trainer: Any) -> str | None:
    """The run's own last.ckpt, if it has written one."""
    for saver in trainer.checkpoint_callbacks:
        if getattr(saver, "dirpath", None) and getattr(saver, "save_last", False):
            path = Path(saver.dirpath) / f"{saver.CHECKPOINT_NAME_LAST}{saver.FILE_EXTENSION}"
            if path.is_file():
                return str(path)
    return None


def checkpoint_step(path: str) -> int | None:
    try:
        return int(load_checkpoint(path).get("global_step"))
    except (ConfigError, TypeError, ValueError):
        return None
