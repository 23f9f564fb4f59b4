"""What the declaration modules share, and the views derived from the registries.

The declaration modules (``rnnlab/tasks/specs/<task>.py``, ``rnnlab/data/specs/<source>.py``) each hold a typed
schema, its registration in :mod:`rnnlab.registry` and the checks of its own keys; the helpers here raise the
one-line :class:`~rnnlab.errors.ConfigError` those checks need. The listings below (``--help``'s option lists, the
docs tables, the data each task accepts) are computed from the registries, never kept by hand.

Light on purpose: no Hydra, no OmegaConf, no torch; ``rnnlab-train --help`` imports this module and every
declaration module.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rnnlab.errors import ConfigError
from rnnlab.registry import CELLS, DATASETS, TASKS, Entry

MISSING = "???"  # omegaconf.MISSING: a value the user must give


# ------------------------------------------------------------------------------------------ value checks
def get(cfg: Any, key: str) -> Any:
    """``cfg["a.b"]`` as ``cfg.a.b``."""
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def positive(cfg: Any, key: str, *, allow_zero: bool = False) -> None:
    """``key`` is > 0 (>= 0 with ``allow_zero``) and finite, or null."""
    value = get(cfg, key)
    if value is None:
        return
    # "not (ok)" so that nan fails too; inf is no size, rate or count either
    if not ((value >= 0 if allow_zero else value > 0) and math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key} must be {bound}, got {value}")


def fraction(cfg: Any, key: str, *, low_open: bool = False) -> None:
    """``key`` is in [0, 1) (in (0, 1) with ``low_open``)."""
    value = get(cfg, key)
    if not (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0):
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ConfigError(f"{key} must be in {interval}, got {value}")


def split_fractions(cfg: Any) -> None:
    """``data.val_fraction`` and ``data.test_fraction`` in (0, 1), together < 1."""
    fraction(cfg, "data.val_fraction", low_open=True)
    fraction(cfg, "data.test_fraction", low_open=True)
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise ConfigError("data.val_fraction + data.test_fraction must be < 1")


def split_sizes(cfg: Any) -> None:
    """``data.num_train``, ``num_val`` and ``num_test`` > 0 (generated data)."""
    for key in ("data.num_train", "data.num_val", "data.num_test"):
        positive(cfg, key)


def discover_builtins() -> None:
    """Register the built-in cells, tasks and datasets now (before a plug-in module imports one of their
    declaration modules), so that listings show the built-ins first, in their own order."""
    for registry in (CELLS, TASKS, DATASETS):
        registry.discover()


# ------------------------------------------------------------------------------------------ derived views
def cell_options(entry: Entry) -> tuple[str, ...]:
    """The ``model.*`` keys a cell reads beyond the common ones (``nonlinearity``): its class's ``options`` or the
    ``options`` of its registration."""
    if "options" in entry.meta:
        return tuple(entry.meta["options"])
    return tuple(getattr(entry.obj, "options", ()) or ())


def data_kind(entry: Entry) -> str:
    """The kind of batches a dataset yields (its registration's ``kind``)."""
    return str(entry.meta.get("kind", ""))


def datasets_of(task: Entry) -> list[Entry]:
    """The datasets a task trains on: those whose kind is the one the task accepts."""
    wanted = str(task.meta.get("accepts", ""))
    return [d for d in DATASETS.entries() if data_kind(d) == wanted]


def tasks_of(dataset: Entry) -> list[Entry]:
    return [t for t in TASKS.entries() if str(t.meta.get("accepts", "")) == data_kind(dataset)]


def monitor_for(task: str, data: str) -> str | None:
    """The metric a dataset asks ``task`` to monitor instead of the task's default (``monitors`` of its
    registration: ner_synth's entity F1 for task=tag); None if it asks nothing."""
    if data not in DATASETS:
        return None
    return (DATASETS.get(data).meta.get("monitors") or {}).get(task)


def find_conf() -> Path:
    """conf/ of a source checkout, or the copy a wheel carries inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"rnnlab's conf/ directory not found next to {here}")


def conf_options(conf: Path, group: str) -> list[str]:
    """The YAML options of a config group (``conf/<group>/*.yaml``), sorted."""
    return sorted(p.stem for p in (conf / group).glob("*.yaml"))


def _names(names: list[str], code: bool) -> str:
    return ", ".join(f"`{n}`" if code else n for n in names)


def registry_options(group: str, code: bool = False) -> str:
    """The registered options of ``model`` (cells), ``task`` or ``data`` (grouped by the task that takes them:
    "imdb, rt_sentences, synthetic_text (classify); ..."), as ``--help`` and the docs list them; ``code`` puts each
    name in backticks."""
    if group == "model":  # a cell with several forms lists them: lstm (model.variant=standard|peephole)
        names = [
            f"{_names([name], code)} (model.variant={'|'.join(CELLS.variants(name))})"
            if len(CELLS.variants(name)) > 1
            else _names([name], code)
            for name in CELLS.names()
        ]
        return ", ".join(names)
    if group == "task":
        return _names(TASKS.names(), code)
    if group != "data":
        raise ValueError(f"no registry behind config group {group!r}: model, task or data")
    parts, seen = [], set()
    for task in TASKS.entries():  # one group per kind of data, named by the tasks that take it
        names = [d.name for d in datasets_of(task) if d.name not in seen]
        seen.update(names)
        if names:
            takers = [t.name for t in TASKS.entries() if t.meta.get("accepts") == task.meta.get("accepts")]
            parts.append(f"{_names(names, code)} ({', '.join(takers)})")
    rest = [name for name in DATASETS.names() if name not in seen]  # data no registered task takes
    return "; ".join(parts + ([_names(rest, code)] if rest else []))


def group_options(group: str, conf: Path) -> str:
    """One line of ``--help``: the options of a config group. model, task and data come from the registries;
    any other group is its conf/ directory."""
    if group in ("model", "task", "data"):
        return registry_options(group)
    return ", ".join(conf_options(conf, group))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def docs_table(kind: str) -> str:
    """The markdown table of one registry (``tasks``, ``datasets`` or ``cells``), as scripts/gen_docs_tables.py
    writes it into the docs."""
    if kind == "tasks":
        rows = ["| task | trains on | data | schema | description |", "|---|---|---|---|---|"]
        for entry in TASKS.entries():
            data = ", ".join(f"`{d.name}`" for d in datasets_of(entry)) or "(none registered)"
            schema = entry.schema.__name__ if entry.schema else ""
            rows.append(f"| `{entry.name}` | {entry.meta.get('accepts', '')} | {data} | `{schema}` | "
                        f"{_cell(entry.doc)} |")  # fmt: skip
    elif kind == "datasets":
        rows = ["| data | kind | task | schema | description |", "|---|---|---|---|---|"]
        for entry in DATASETS.entries():
            tasks = ", ".join(f"`{t.name}`" for t in tasks_of(entry)) or "(none registered)"
            schema = entry.schema.__name__ if entry.schema else ""
            rows.append(f"| `{entry.name}` | {data_kind(entry)} | {tasks} | `{schema}` | {_cell(entry.doc)} |")
    elif kind == "cells":
        rows = ["| cell | variants | description |", "|---|---|---|"]
        for name in CELLS.names():
            variants = ", ".join(CELLS.variants(name))
            rows.append(f"| `{name}` | {variants} | {_cell(CELLS.get(name).doc)} |")
    else:
        raise ValueError(f"no docs table of {kind!r}: tasks, datasets or cells")
    return "\n".join(rows)
