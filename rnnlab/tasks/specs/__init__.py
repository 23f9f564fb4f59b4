"""The tasks' declarations: one light module per task (NumPy at most; never torch or lightning).

Each module holds the task's typed config schema (a :class:`TaskConfig` subclass: ``task.*``), its registration in
``rnnlab.registry.TASKS`` and the checks of its own keys::

    TASKS.add("classify", target="rnnlab.tasks.classify:ClassifyTask", schema=ClassifyTaskConfig,
              accepts="classification", check=check, doc="...")

``target`` is the LightningModule (imported only when a run builds it); ``accepts`` the kind of batches the task
trains on (a dataset's ``kind``, :mod:`rnnlab.data.specs`); ``check(cfg)`` raises a one-line ConfigError for a bad
value of the task's keys (``rnnlab.config.validate`` calls it once the task and the data fit); ``model_keys`` the
``model.*`` keys only this task reads (``attention``: any other task refuses a value other than the default).
Every module of this package is imported the first time the registry is asked for a task: ``rnnlab-train --help``,
``validate``, Hydra's ConfigStore (``schema/task/<name>``, and ``task/<name>`` for a task without a YAML preset in
``conf/task/``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rnnlab.specs import MISSING


@dataclass
class TaskConfig:
    """``task.*`` of every task."""

    name: str = MISSING
    monitor: str = "val/loss"  # the metric the best checkpoint and sweeps optimize
    mode: str = "min"
