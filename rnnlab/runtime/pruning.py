"""Pruning of unpromising trials in an Optuna search: ``hydra/sweeper=optuna_pruning`` and its ``pruner``.

hydra-optuna-sweeper asks the study for a batch of trials, launches one sweep job per trial and tells the study
each job's final value; the trial object stays in the sweeper's process. A pruner needs more: the trial's
intermediate values while it trains, and a way to stop it. This module adds both, around the plugin:

* the sweeper of ``hydra/sweeper=optuna_pruning`` (rnnlab.runtime.optuna_sweeper, which the ``hparams_search``
  presets use): the plugin's sweeper with a ``pruner`` (an ``optuna.pruners`` config, the ``hydra/sweeper/pruner``
  group; null: no pruning). Before each batch is launched it writes ``<sweep dir>/optuna_trials.json``
  (:data:`TRIALS`): for every job number, the trial's number and id, so that each job finds its trial; after the
  batch, each trial's state and value. It tells the study ``PRUNED`` (not ``COMPLETE``) for a trial whose job was
  pruned, after copying the job's intermediate values into its own view of the trial (its sampler ranks pruned
  trials by how far they got).
* ``TrialPruning`` (:func:`trial_pruning`), a Lightning callback that every job of such a search gets (either
  backend): after each validation it reports ``optimized_metric`` (a ``val/`` metric) at the global step to the
  trial and asks the pruner; when told to prune it stops the fit there, as early stopping does (the run still tests
  its best checkpoint and writes summary.json, whose ``optuna_trial`` says where it was pruned).

A job reaches its trial through the study's storage (``hydra.sweeper.storage``: jobs of any launcher), or, for a
study in memory, in the sweeper's own process (the basic launcher runs its jobs there; any other launcher with a
study in memory is refused in one line). :func:`check` holds the other refusals: a multi-objective study (Optuna
has no pruning for it), an ``optimized_metric`` that is not measured during the fit, a trial of several processes.

Nothing here imports optuna or Lightning at import time: every sweep job asks rnnlab.runtime.search.job_callbacks
for its callbacks, and rnnlab.config registers the sweeper's schema (``optuna_pruning_schema``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)

TRIALS = "optuna_trials.json"  # in the sweep directory: job number -> trial
TARGET = "hydra_plugins.rnnlab_optuna_pruning.pruning_sweeper.OptunaPruningSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
STUDIES: dict[str, Any] = {}  # sweep directory -> the sweeper's study (for jobs that run in its process)


def sweep_key(sweep_dir: Any) -> str:
    return str(Path(str(sweep_dir)).expanduser().absolute())


def pruner_config(hydra_cfg: Any) -> Any:
    """The sweeper's ``pruner`` config when the sweep is a pruning Optuna search, else None."""
    sweeper = OmegaConf.select(hydra_cfg, "sweeper", default=None) if hydra_cfg is not None else None
    if not isinstance(sweeper, DictConfig) or str(sweeper.get("_target_", "")) != TARGET:
        return None
    return sweeper.get("pruner")


def pruner_name(pruner: Any) -> str:
    """``MedianPruner`` for a pruner's config or the pruner itself."""
    if not isinstance(pruner, (dict, DictConfig)):
        return type(pruner).__name__
    return str(pruner.get("_target_") or "?").rsplit(".", 1)[-1]


def make_pruner(pruner: Any) -> Any:
    """An ``optuna.pruners`` object from its config (or the object, which Hydra made when it made the sweeper);
    ConfigError naming ``hydra.sweeper.pruner`` when it fails."""
    made = _instantiate(pruner) if isinstance(pruner, (dict, DictConfig)) else pruner
    import optuna

    if not isinstance(made, optuna.pruners.BasePruner):
        raise ConfigError(
            f"hydra.sweeper.pruner: {type(made).__name__} is not an Optuna pruner (optuna.pruners.BasePruner)"
        )
    return made


def _instantiate(pruner: Any) -> Any:
    from hydra.utils import instantiate

    try:
        made = instantiate(pruner)
    except Exception as ex:
        from rnnlab.errorlines import one_line_error

        cause = ex.__cause__ or ex
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ConfigError(f"hydra.sweeper.pruner={pruner_name(pruner)}: {one_line_error(ex) or reason}") from ex
    return made


def check(config: DictConfig) -> None:
    """Refuse, in one line naming the key, a pruning search that cannot work: called in the sweeper's process
    before the first trial (rnnlab.runtime.search.OptunaWorker)."""
    pruner = pruner_config(config.hydra)
    if pruner is None:
        return
    name = pruner_name(pruner)
    direction = config.hydra.sweeper.get("direction")
    if (OmegaConf.is_list(direction) or isinstance(direction, list)) and len(direction) > 1:
        raise ConfigError(
            f"hydra.sweeper.pruner={name}: Optuna prunes single-objective studies only; this one has "
            f"{len(direction)} directions (hydra.sweeper.direction): hydra/sweeper/pruner=none"
        )
    metric = config.get("optimized_metric")
    if not metric or not str(metric).startswith("val/"):
        raise ConfigError(
            f"optimized_metric={metric}: a pruner ({name}) judges a trial by its value at each validation, so the "
            "optimized metric must be a validation metric (val/...); or hydra/sweeper/pruner=none"
        )
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    if config.hydra.sweeper.get("storage") is None and launcher != BASIC_LAUNCHER:
        raise ConfigError(
            f"hydra.sweeper.storage: the jobs of {launcher.rsplit('.', 1)[-1]} run in other processes, which reach "
            f"their trials (for the pruner, {name}) only through a storage: set hydra.sweeper.storage=sqlite:///"
            "search.db (one machine) or a PostgreSQL URL"
        )
    _check_single_process(config)
    make_pruner(pruner)


def _check_single_process(config: DictConfig) -> None:
    from rnnlab.runtime.distributed import _process_count

    trainer = config.get("trainer") or {}
    count = _process_count(trainer.get("devices", 1), trainer.get("accelerator", "cpu"))
    nodes = int(trainer.get("num_nodes", 1) or 1)
    if (count is not None and count > 1) or nodes > 1:
        raise ConfigError(
            f"trainer.devices={trainer.get('devices')}: a trial of a pruning search runs in one process (its "
            "pruner stops the fit on one rank); hydra/sweeper/pruner=none for a search of multi-process trials"
        )


# -------------------------------------------------------------------------------------------- the callback
class _TrialPruning:
    """Reports ``monitor`` after each validation to ``trial`` (at the global step) and stops the fit when the
    study's pruner prunes the trial. Its reports and where it was pruned are kept in checkpoints, so a resumed
    trial (a requeued SLURM job) goes on with them; :meth:`record` is summary.json's ``optuna_trial``."""

    def __init__(self, trial: Any, monitor: str, pruner: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruner = pruner
        self.reported: dict[int, float] = {}
        self.pruned: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "TrialPruning"

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if trainer.world_size > 1:
            raise ConfigError(
                f"trainer.devices: a trial of a pruning search runs in one process, this one in "
                f"{trainer.world_size}; hydra/sweeper/pruner=none for a search of multi-process trials"
            )

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or self.pruned is not None or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        step = int(trainer.global_step)
        value = float(value)
        self.trial.report(value, step)
        self.reported[step] = value
        if self.trial.should_prune():
            self.pruned = {"step": step, "epoch": int(trainer.current_epoch), "value": value}
            trainer.should_stop = True
            log.info(f"Trial {self.trial.number} pruned by {self.pruner} at step {step}: {self.monitor}={value:.6g}")

    def state_dict(self) -> dict[str, Any]:
        return {"reported": {str(k): v for k, v in self.reported.items()}, "pruned": self.pruned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reported = {int(k): float(v) for k, v in (state_dict.get("reported") or {}).items()}
        self.pruned = state_dict.get("pruned")

    def record(self) -> dict[str, Any]:
        return {
            "number": int(self.trial.number),
            "pruner": self.pruner,
            "monitor": self.monitor,
            "reported": {str(k): v for k, v in sorted(self.reported.items())},
            "pruned": dict(self.pruned) if self.pruned else None,
        }


_CALLBACK: type | None = None


def trial_pruning(trial: Any, monitor: str, pruner: str) -> Any:
    """A :class:`_TrialPruning` that is a Lightning callback (Lightning is imported here, not with this module)."""
    global _CALLBACK
    if _CALLBACK is None:
        import lightning as L

        _CALLBACK = type("TrialPruning", (_TrialPruning, L.Callback), {"__module__": __name__})
    return _CALLBACK(trial, monitor, pruner)


def trial_record(trainer: Any) -> dict[str, Any] | None:
    """summary.json's ``optuna_trial``: the trial's number, the values reported to it (by global step) and where
    it was pruned (null: it ran to the end); None for a run that is no trial of a pruning search."""
    for callback in trainer.callbacks:
        if isinstance(callback, _TrialPruning):
            return callback.record()
    return None
