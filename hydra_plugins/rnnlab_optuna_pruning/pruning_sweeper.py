"""The sweeper class of ``hydra/sweeper=optuna_pruning`` (see rnnlab.runtime.pruning); light at import time."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class OptunaPruningSweeper(Sweeper):
    """hydra-optuna-sweeper's sweeper with a pruner (``hydra.sweeper.pruner``, an ``optuna.pruners`` config;
    null: none): rnnlab.runtime.optuna_sweeper.PruningSweeperImpl does the work."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        search_space: Any,
        custom_search_space: str | None,
        params: Any,
        pruner: Any = None,
    ) -> None:
        from rnnlab.runtime.optuna_sweeper import PruningSweeperImpl

        self.sweeper = PruningSweeperImpl(
            sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, search_space,
            custom_search_space, params,
        )  # fmt: skip
        self.sweeper.pruner_cfg = pruner

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
