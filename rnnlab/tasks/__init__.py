"""One LightningModule per task, written once for every backend.

``TASKS`` maps ``task.name`` to "module:Class"; the module is imported only when the task is used.
"""

from __future__ import annotations

import importlib
from typing import Any

TASKS: dict[str, str] = {
    "classify": "rnnlab.tasks.classify:ClassifyTask",
    "language_model": "rnnlab.tasks.language_model:LanguageModelTask",
    "regress": "rnnlab.tasks.regress:RegressTask",
    "tag": "rnnlab.tasks.tag:TagTask",
    "seq2seq": "rnnlab.tasks.seq2seq:Seq2SeqTask",
    "forecast": "rnnlab.tasks.forecast:ForecastTask",
}


def task_class(name: str) -> Any:
    target = TASKS.get(str(name))
    if target is None:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
