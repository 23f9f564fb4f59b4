"""task=tag: one label per timestep from the recurrent outputs (bidirectional by default: conf/task/tag.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from rnnlab.registry import TASKS
from rnnlab.tasks.specs import TaskConfig


@dataclass
class TagTaskConfig(TaskConfig):
    name: str = "tag"
    # conf/task/tag.yaml: ${rnnlab_tag_monitor:${data.name}}, the data's own choice (val/entity_f1 on ner_synth)
    monitor: str = "val/acc"
    mode: str = "max"


TASKS.add(
    "tag",
    target="rnnlab.tasks.tag:TagTask",
    schema=TagTaskConfig,
    accepts="tagging",  # (token ids, length, one label per token)
    doc="one label per timestep; val/acc, and span F1 on entity data",
)
