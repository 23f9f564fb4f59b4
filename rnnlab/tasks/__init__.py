"""One LightningModule per task, written once for every backend.

Each task is registered in ``rnnlab.registry.TASKS`` by its declaration module (``rnnlab/tasks/specs/<task>.py``)
with a "module:Class" target; the module is imported only when the task is used.
"""

from __future__ import annotations

from typing import Any


def task_class(name: str) -> Any:
    """The LightningModule class of ``task.name`` (a RegistryError, one line naming the registered tasks, for an
    unknown name)."""
    from rnnlab.registry import TASKS

    return TASKS.get(str(name)).load()
