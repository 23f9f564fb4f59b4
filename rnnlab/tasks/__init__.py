"""One LightningModule per task, written once for every backend."""

from __future__ import annotations

from typing import Any


def task_class(name: str) -> Any:
    if name == "classify":
        from rnnlab.tasks.classify import ClassifyTask

        return ClassifyTask
    if name == "language_model":
        from rnnlab.tasks.language_model import LanguageModelTask

        return LanguageModelTask
    raise ValueError(f"unknown task {name!r}")
