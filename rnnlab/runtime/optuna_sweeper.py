"""The work of ``hydra/sweeper=optuna_pruning`` (hydra_plugins/rnnlab_optuna_pruning): hydra-optuna-sweeper's sweeper
with a pruner (rnnlab.runtime.pruning).

The plugin's sweep loop is kept whole (asking for a batch, launching it, telling the values, the failure rate,
``optimization_results.yaml``); three of its steps are extended:

* ``setup``: the launcher is wrapped, so that each job's return (its config, hence its run directory) is kept by
  job number;
* ``_configure_trials`` (called once per batch, before the batch is launched): the study gets the configured pruner
  and a wrapped ``tell``, is made reachable for jobs that run in this process, and ``<sweep dir>/optuna_trials.json``
  is written with each job's trial number and id (a job reads its own from it);
* ``tell`` (wrapped): the job's intermediate values (from its summary.json) are copied into this process's view of
  the trial, and a trial whose job was pruned is told ``PRUNED`` instead of ``COMPLETE``; optuna_trials.json then
  records each trial's state and value.

This module imports the plugin's implementation and optuna: the sweeper class imports it when it is made.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from rnnlab.runtime.pruning import STUDIES, TRIALS, make_pruner, pruner_name, sweep_key

log = logging.getLogger(__name__)


class _Returns:
    """The sweeper's launcher, remembering each job's return by its job number."""

    def __init__(self, launcher: Any, returns: dict[int, Any]) -> None:
        self._launcher = launcher
        self._returns = returns

    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        returns = self._launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        for offset, ret in enumerate(returns):
            self._returns[initial_job_idx + offset] = ret
        return returns

    def __getattr__(self, name: str) -> Any:
        return getattr(self._launcher, name)


def job_outcome(ret: Any) -> dict[str, Any] | None:
    """The ``optuna_trial`` record of a finished job's summary.json (None for a job without one)."""
    if ret is None or getattr(ret, "cfg", None) is None or getattr(ret, "hydra_cfg", None) is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    here = HydraConfig.instance().cfg
    HydraConfig.instance().cfg = ret.hydra_cfg  # paths.run_dir is ${hydra:runtime.output_dir} of the job
    try:
        run_dir = OmegaConf.select(ret.cfg, "paths.run_dir", default=None)
    except Exception:
        run_dir = None
    finally:
        HydraConfig.instance().cfg = here
    if run_dir is None:
        return None
    try:
        summary = json.loads((Path(str(run_dir)) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    outcome = summary.get("optuna_trial") if isinstance(summary, dict) else None
    return outcome if isinstance(outcome, dict) else None


class PruningSweeperImpl(OptunaSweeperImpl):
    """The plugin's sweeper implementation with each job's trial handed to it and pruned trials told so."""

    pruner_cfg: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self._returns: dict[int, Any] = {}
        self._jobs: dict[int, dict[str, Any]] = {}  # job number -> its trial's record (optuna_trials.json)
        self._job_of: dict[int, int] = {}  # trial number -> job number
        self._pruner = make_pruner(self.pruner_cfg) if self.pruner_cfg is not None else None
        self._wrapped: set[int] = set()  # the studies whose tell is wrapped
        self.launcher = _Returns(self.launcher, self._returns)

    def sweep(self, arguments: list[str]) -> None:
        try:
            return super().sweep(arguments)
        except ValueError as ex:
            states = [entry["state"] for entry in self._jobs.values()]
            if "No trials are completed" not in str(ex) or "COMPLETE" in states:
                raise
            from rnnlab.errors import ConfigError

            counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states)))
            raise ConfigError(
                f"hydra.sweeper.pruner={pruner_name(self._pruner) if self._pruner is not None else None}: no trial "
                f"of this search completed ({counts}), so it has no best trial; each trial's state is in "
                f"{Path(str(self.sweep_dir)) / TRIALS}"
            ) from None
        finally:
            STUDIES.pop(sweep_key(self.sweep_dir), None)

    def _configure_trials(self, trials: Any, search_space_distributions: Any, fixed_params: Any) -> Any:
        overrides = super()._configure_trials(trials, search_space_distributions, fixed_params)
        if trials and id(trials[0].study) not in self._wrapped:
            study = trials[0].study
            self._wrapped.add(id(study))
            if self._pruner is not None:
                study.pruner = self._pruner
            study.tell = self._wrap_tell(study, study.tell)
            STUDIES[sweep_key(self.sweep_dir)] = study
        for offset, (trial, job) in enumerate(zip(trials, overrides, strict=True)):
            num = self.job_idx + offset  # the launcher numbers the batch's jobs from self.job_idx
            self._job_of[trial.number] = num
            self._jobs[num] = {"trial": trial.number, "trial_id": trial._trial_id, "overrides": list(job),
                               "state": "RUNNING", "value": None, "pruned_at_step": None}  # fmt: skip
        self._write()
        return overrides

    def _write(self) -> None:
        from rnnlab.atomic import write_json

        sweep_dir = Path(str(self.sweep_dir))
        if sweep_dir.is_dir():
            write_json(
                sweep_dir / TRIALS,
                {
                    "study_name": self.study_name,
                    "pruner": pruner_name(self.pruner_cfg) if self.pruner_cfg is not None else None,
                    "jobs": {str(num): entry for num, entry in sorted(self._jobs.items())},
                },
            )

    def _wrap_tell(self, study: Any, tell: Any) -> Any:
        def pruning_tell(trial: Any, values: Any = None, state: Any = TrialState.COMPLETE) -> Any:
            number = trial if isinstance(trial, int) else trial.number
            num = self._job_of.get(number)
            outcome = job_outcome(self._returns.get(num)) if num is not None else None
            pruned = None
            if outcome is not None and outcome.get("number") == number:
                _add_reports(study, self._jobs[num]["trial_id"], outcome.get("reported") or {})
                pruned = outcome.get("pruned")
            if pruned and state == TrialState.COMPLETE:
                state, values = TrialState.PRUNED, None
                log.info(f"Trial {number} pruned at step {pruned.get('step')} "
                         f"({outcome.get('monitor')}={pruned.get('value')})")  # fmt: skip
            result = tell(trial=trial, values=values, state=state)
            if num is not None:
                self._jobs[num].update(state=state.name, value=values[0] if values else None,
                                       pruned_at_step=pruned.get("step") if pruned else None)  # fmt: skip
                self._write()
            return result

        return pruning_tell


def _add_reports(study: Any, trial_id: int, reported: dict[str, Any]) -> None:
    """The job's intermediate values into this process's view of the trial: a study in a storage caches the
    trials this process asked for and does not see what their jobs wrote into the storage; its sampler ranks a
    pruned trial by its last intermediate value."""
    have = study._storage.get_trial(trial_id).intermediate_values
    for step, value in sorted((int(s), v) for s, v in reported.items()):
        if step not in have and value is not None and math.isfinite(float(value)):
            study._storage.set_trial_intermediate_value(trial_id, step, float(value))
