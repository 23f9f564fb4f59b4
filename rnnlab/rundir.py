"""A run never writes into another run's directory: the Hydra callback ``RunDirGuard`` (conf/hydra/default.yaml).

Hydra creates the run directory and writes ``.hydra/`` and the job's log into it before rnnlab's code runs, so a
``hydra.run.dir`` (or ``hydra.sweep.dir``) that points at an earlier run would have its recorded config replaced
and its log appended to even by a run that then fails, and a run that goes on would overwrite its checkpoints,
metrics and summary. The guard refuses such a directory with one line before Hydra touches it. Every run gets a
fresh directory by default (a microsecond time stamp); a resumed run (``ckpt_path=...``) too, so continuing a run
never needs its old directory. Light imports only: the guard runs on every start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError

# what a run writes into its directory (besides the job log, <hydra.job.name>.log)
RUN_FILES = (".hydra", "config_resolved.yaml", "summary.json", "checkpoints", "tensorboard", "csv", "figures")
SWEEP_FILES = ("multirun.yaml", "optimization_results.yaml")


def run_files_in(path: Path, job_name: str | None = None) -> list[str]:
    """The names in ``path`` that belong to a run (sorted; empty for a new, empty or unrelated directory)."""
    if not path.is_dir():
        return []
    names = set(RUN_FILES) | ({f"{job_name}.log"} if job_name else set())
    return sorted(p.name for p in path.iterdir() if p.name in names)


def sweep_files_in(path: Path) -> list[str]:
    """The names in ``path`` that belong to a sweep: its multirun.yaml, Optuna's results, or job directories."""
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.name in SWEEP_FILES or (p / ".hydra").is_dir())


def check_new_dir(path: Path, key: str, held: list[str]) -> None:
    """Raise ConfigError (one line) unless ``path`` can become a new run's (or sweep's) directory. Creates nothing:
    Hydra does, and it resolves ``${now:...}`` itself."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file, not a directory")
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ConfigError(
            f"{key}={path} already holds a run ({shown}); a run never writes into another run's directory: "
            f"choose a new {key}, or leave it unset for a fresh one"
        )
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}: cannot create {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot create {path}: {parent} is not writable")


def _resolved(config: DictConfig, key: str) -> str | None:
    try:
        value = OmegaConf.select(config, key, throw_on_resolution_failure=True)
    except Exception:  # an interpolation Hydra resolves only later (${hydra:...}): leave the check to Hydra
        return None
    return None if value is None else str(value)


def _in_launched_process() -> bool:
    """A process started by a DDP launcher (Lightning's subprocess launcher, torchrun, srun): rank 0 of Lightning's
    own launch checked already, and the other ranks find the directory rank 0 has begun to write. The processes of
    a torchrun or multi-task srun launch start together and share one directory (rnnlab.distributed.run_stamp),
    so rank 0 may find its peers' files there: the guard leaves such launches alone."""
    from rnnlab.distributed import launch_rank  # srun's ranks carry SLURM_PROCID only

    if any(name in os.environ for name in ("LOCAL_RANK", "RANK")) or launch_rank() != 0:
        return True
    try:
        return max(int(os.environ.get(k, "1")) for k in ("WORLD_SIZE", "SLURM_STEP_NUM_TASKS")) > 1
    except ValueError:
        return True


def _refuse(err: ConfigError) -> None:
    # Hydra turns a callback's exceptions into warnings and goes on: the refusal has to end the process here
    sys.stderr.write(f"rnnlab: error: {str(err).splitlines()[0]}\n")
    sys.exit(1)


class RunDirGuard(Callback):
    """Refuses a ``hydra.run.dir`` / ``hydra.sweep.dir`` that already holds a run, before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = _resolved(config, "hydra.run.dir")
        if run_dir is None or _in_launched_process():
            return
        path = Path(run_dir).expanduser().absolute()
        try:
            check_new_dir(path, "hydra.run.dir", run_files_in(path, _resolved(config, "hydra.job.name")))
        except ConfigError as err:
            _refuse(err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = _resolved(config, "hydra.sweep.dir")
        if sweep_dir is None or _in_launched_process():
            return
        path = Path(sweep_dir).expanduser().absolute()
        try:
            check_new_dir(path, "hydra.sweep.dir", sweep_files_in(path))
        except ConfigError as err:
            _refuse(err)
