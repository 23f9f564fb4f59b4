"""The datasets' declarations: one light module per data source (NumPy at most; never torch, lightning, pandas).

Each module holds the source's typed config schema (a :class:`DataConfig` subclass: ``data.*``), its
registration in ``rnnlab.registry.DATASETS`` under every ``data.name`` users type, and the checks of its keys::

    DATASETS.add("imdb", target="rnnlab.data.reviews:build_reviews", schema=ReviewsConfig,
                 kind="classification", check=check, doc="...")

Several names may share a schema and a builder (``imdb`` and ``rt_sentences``). ``target`` is the builder, a
function ``(data_cfg, seed, cache_dir, batch_size=, num_workers=, pin_memory=)`` returning the LightningDataModule
(imported only when a run builds it: ``rnnlab.data.datamodules.build_datamodule``); ``kind`` the batches it yields,
which decides the tasks that train on it (a task's ``accepts``, :mod:`rnnlab.tasks.specs`); ``check(cfg)`` raises a
one-line ConfigError for a bad value of its keys; ``monitors`` a metric per task that should monitor another
metric than its default on this data (``{"tag": "val/entity_f1"}``); ``quick`` overrides that make a run small
(scripts/check_catalogue.py). The kinds of the built-in tasks, by batch layout:

* ``classification``: (token ids, length, label);
* ``char_corpus``: windows of a character stream;
* ``forecast``: (window of float features [T, F], future targets [horizon, targets]);
* ``tagging``: (token ids, length, one label per token);
* ``regression``: (float features [T, F], one float target);
* ``seq2seq``: (source ids, source length, target ids, target length);
* ``piano_roll``: (piano roll inputs [T, 88], lengths, next-step piano roll targets).
"""

from __future__ import annotations

from dataclasses import dataclass

from rnnlab.specs import MISSING


@dataclass
class DataConfig:
    """``data.*`` of every dataset; ``name`` and ``kind`` are filled in from the registration."""

    name: str = MISSING
    kind: str = MISSING
    batch_size: int = 64
    num_workers: int = 0
    pin_memory: bool = False
