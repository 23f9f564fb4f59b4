"""Resuming from a checkpoint: the checks on the file, what a resumed run may change, and what it must keep.

Every checkpoint carries the run's record (``checkpoint["rnnlab"]``: the resolved config of the groups that shape
the run, the seed used and a fingerprint of the data). A run started with ``ckpt_path=...``:

* keeps every key that changes the model, the data or the arithmetic: ``model.*``, ``data.*`` (but
  ``data.num_workers`` and ``data.pin_memory``; ``data.path`` is compared by the file's content, so a moved file
  is fine), ``seed``, ``optimizer.*`` but the learning rate, ``task.*`` but the sampling and decoding options
  (:data:`FREE`), and ``trainer.precision``, ``trainer.accumulate_grad_batches``, ``trainer.gradient_clip_*``.
  A change is refused with one line that lists what differs;
* takes the checkpoint's seed when ``seed=null`` (the seed the run drew is in the record);
* applies ``optimizer.lr`` and ``trainer.max_epochs`` / ``max_steps`` / ``max_time``, announced in one line: the
  learning rate is written into the optimizer state before Lightning restores it (:class:`ResumeOverrides`), so
  both backends step with the new value from the first resumed step. With a learning-rate schedule
  (``scheduler``, kept like ``optimizer.*``) the rate is the schedule's, which continues from its saved state:
  a new ``optimizer.lr`` is refused there.

A checkpoint whose weights hold NaN or Inf is refused with one line that names the file (:func:`nonfinite`).
This module imports no torch at import time.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError

log = logging.getLogger("rnnlab")

RECORD_KEY = "rnnlab"
GROUPS = ("model", "data", "optimizer", "scheduler", "task")
NO_SCHEDULER = {"name": "none"}  # what a checkpoint from before the scheduler group ran with
TRAINER_FIXED = ("precision", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm")
FREE = frozenset(
    {
        "data.num_workers",
        "data.pin_memory",
        "data.path",  # compared by content (data_fingerprint)
        "task.sample_prompt",
        "task.sample_length",
        "task.temperature",
        "task.top_k",
        "task.beam_size",
        "task.max_decode_len",
        "task.attention_examples",
    }
)
APPLIED = ("optimizer.lr", "trainer.max_epochs", "trainer.max_steps", "trainer.max_time")


# ---------------------------------------------------------------------------------------------- the record
def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True) if isinstance(node, DictConfig) else node


def data_fingerprint(data_cfg: Any) -> str | None:
    """sha256 of the file behind ``data.path`` (None for data without a file: its config is its identity)."""
    path = data_cfg.get("path") if hasattr(data_cfg, "get") else None
    if not path:
        return None
    from rnnlab.provenance import file_sha256

    p = Path(str(path)).expanduser()
    return file_sha256(p) if p.is_file() else None


def _group(cfg: DictConfig, group: str) -> Any:
    node = cfg.get(group)
    return dict(NO_SCHEDULER) if group == "scheduler" and node is None else _plain(node)


def run_record(cfg: DictConfig, seed: int, fingerprint: str | None) -> dict[str, Any]:
    """What a checkpoint records of the run that wrote it (``checkpoint["rnnlab"]``)."""
    config = {group: _group(cfg, group) for group in GROUPS}
    config["trainer"] = {key: _plain(cfg.trainer.get(key)) for key in (*TRAINER_FIXED, "max_epochs", "max_steps")}
    plugins = [str(name) for name in cfg.get("plugins") or []]  # what registered a plug-in cell, task or dataset
    return {"config": config, "seed": int(seed), "data_sha256": fingerprint, "plugins": plugins}


def recorded_plugins(saved: dict[str, Any]) -> list[str]:
    """The plug-in modules (``plugins=[...]``) of the run that wrote a checkpoint: what a resume, rnnlab-generate or
    anything else that rebuilds its network imports first (none for a checkpoint from before they were recorded)."""
    record = saved.get(RECORD_KEY) if isinstance(saved, dict) else None
    names = record.get("plugins") if isinstance(record, dict) else None
    return [str(name) for name in names or []]


def import_recorded_plugins(saved: dict[str, Any], path: str) -> list[str]:
    """Import the plug-in modules a checkpoint records (from the working directory or ``PYTHONPATH``), so that the
    cell, task or dataset they register can be rebuilt; one line naming a module that cannot be imported."""
    import importlib

    from rnnlab.registry import RegistryError, working_directory_on_path
    from rnnlab.specs import discover_builtins

    names = recorded_plugins(saved)
    if names:
        working_directory_on_path()
        discover_builtins()  # the built-ins first, as on the command line
    for name in names:
        try:
            importlib.import_module(name)
        except (ImportError, RegistryError) as err:
            raise ConfigError(
                f"ckpt_path: the run that wrote this checkpoint loaded plugins=[{','.join(names)}], and {name!r} "
                f"cannot be imported here ({str(err).splitlines()[0]}); run from its directory or put it on "
                f"PYTHONPATH: {path}"
            ) from err
    return names


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


_UNKNOWN = object()


def _schema_default(cfg: DictConfig, key: str) -> Any:
    """The default of ``group.name`` in the group's schema (a dataclass), or ``_UNKNOWN``."""
    import dataclasses

    group, _, name = key.partition(".")
    node = cfg.get(group)
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if schema is None or not dataclasses.is_dataclass(schema) or "." in name:
        return _UNKNOWN
    for f in dataclasses.fields(schema):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return _plain(f.default) if not hasattr(f.default, "value") else f.default.value
            return _UNKNOWN
    return _UNKNOWN


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)


# ----------------------------------------------------------------------------------------------- the plan
@dataclass
class ResumePlan:
    """What a resume from ``path`` does: the seed to use, the overrides that apply and the line announcing them."""

    path: str
    seed: int
    step: int
    epoch: int
    lr: float | None = None  # a new learning rate for the optimizer state
    applied: list[str] = field(default_factory=list)

    def announce(self) -> None:
        changes = f": {', '.join(self.applied)}" if self.applied else ""
        log.info("Resuming %s at step %d (epoch %d)%s", self.path, self.step, self.epoch, changes)


def plan_resume(cfg: DictConfig, saved: dict[str, Any], path: str) -> ResumePlan:
    """Compare the run's config with the checkpoint's record; raise ConfigError (one line) for a change that a
    resume cannot make."""
    hparams = saved.get("hyper_parameters") or {}
    record = saved.get(RECORD_KEY) or {}
    theirs_seed = record.get("seed", hparams.get("seed"))
    seed = int(theirs_seed) if cfg.seed is None and theirs_seed is not None else cfg.seed
    changed: list[str] = []
    if theirs_seed is not None and seed is not None and int(seed) != int(theirs_seed):
        changed.append(f"seed ({theirs_seed} -> {seed})")
    config = record.get("config")
    applied: list[str] = []
    lr: float | None = None
    if config is not None:
        config = {"scheduler": dict(NO_SCHEDULER), **config}
        ours = {group: _group(cfg, group) for group in GROUPS}
        ours["trainer"] = {key: _plain(cfg.trainer.get(key)) for key in TRAINER_FIXED}
        mine, theirs = _flat(ours), _flat({**config, "trainer": {k: config["trainer"].get(k) for k in TRAINER_FIXED}})
        for key in sorted(set(mine) | set(theirs)):
            if key in FREE or key in APPLIED:
                continue
            if key not in theirs and key in mine:  # a key added to a schema since: its default is what they had
                default = _schema_default(cfg, key)
                if default is not _UNKNOWN and not _same(mine[key], default):
                    changed.append(f"{key} (not in the checkpoint, so {_shown(default)} -> {_shown(mine[key])})")
                continue
            if key not in mine:
                continue
            if not _same(mine[key], theirs[key]):
                changed.append(f"{key} ({_shown(theirs[key])} -> {_shown(mine[key])})")
        fingerprint = record.get("data_sha256")
        if cfg.data.get("path") and fingerprint and data_fingerprint(cfg.data) != fingerprint:
            changed.append(f"data.path (the file's content differs from the checkpoint's: {cfg.data.path})")
        before = _flat(config)
        for key in APPLIED:
            group, name = key.split(".")
            now = _plain(cfg[group].get(name))
            was = before.get(key)
            if key in before and not _same(now, was):
                applied.append(f"{key}={_shown(now)} (was {_shown(was)})")
                if key == "optimizer.lr":
                    lr = float(now)
        schedule = (ours.get("scheduler") or {}).get("name", "none")
        if lr is not None and schedule != "none":  # torch's schedulers keep the starting rate in their own state
            applied = [entry for entry in applied if not entry.startswith("optimizer.lr=")]
            changed.append(f"optimizer.lr ({_shown(before.get('optimizer.lr'))} -> {_shown(lr)}; the "
                           f"scheduler={schedule} continues from the rate the run started with)")  # fmt: skip
            lr = None
    else:  # a checkpoint from before the record existed: what its hyperparameters hold
        old_optimizer = dict(hparams.get("optimizer") or {})
        new_optimizer = _plain(cfg.optimizer)
        for key in sorted(set(old_optimizer) & set(new_optimizer)):
            if key == "lr":
                if not _same(old_optimizer[key], new_optimizer[key]):
                    applied.append(f"optimizer.lr={new_optimizer[key]} (was {old_optimizer[key]})")
                    lr = float(new_optimizer[key])
            elif not _same(old_optimizer[key], new_optimizer[key]):
                changed.append(f"optimizer.{key} ({old_optimizer[key]} -> {new_optimizer[key]})")
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise ConfigError(
            f"ckpt_path: a resumed run keeps what shapes the model, the data and the arithmetic, and this one "
            f"changes {shown}; resume with the checkpoint's values, or start a new run: {path}"
        )
    step, epoch = int(saved.get("global_step", 0)), int(saved.get("epoch", 0))
    return ResumePlan(path=path, seed=int(seed) if seed is not None else 0, step=step, epoch=epoch, lr=lr,
                      applied=applied)  # fmt: skip


# ---------------------------------------------------------------------------------------------- the file
def nonfinite(saved: dict[str, Any]) -> list[str]:
    """The names of the weight arrays of a checkpoint (either backend) that hold NaN or Inf."""
    import torch

    bad: list[str] = []

    def visit(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(f"{name}.{key}" if name else str(key), item)

    visit("", saved.get("state_dict") or {})
    numpy_state = saved.get("numpy_backend") or {}
    visit("", numpy_state.get("params", numpy_state) if isinstance(numpy_state, dict) else {})
    return bad


def check_finite(saved: dict[str, Any], path: str, key: str = "ckpt_path") -> None:
    """One line naming the file when its weights hold NaN or Inf."""
    bad = nonfinite(saved)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ConfigError(
            f"{key}: the checkpoint's weights hold NaN or Inf ({bad[0]}{more}); it cannot be used: {path}"
        )


def apply_lr(checkpoint: dict[str, Any], lr: float) -> None:
    """Write learning rate ``lr`` into the optimizer states of a Lightning checkpoint (torch.optim param groups, or
    the NumPy optimizer's state), so that the resumed optimizer steps with it."""
    for state in checkpoint.get("optimizer_states") or []:
        if not isinstance(state, dict):
            continue
        for group in state.get("param_groups") or []:
            group["lr"] = lr
        if "lr" in state:  # rnnlab.backends.numpy.NumpyOptimizer's state
            state["lr"] = lr


def resume_command(cfg: DictConfig, checkpoint: str) -> str:
    """The command that resumes this run from ``checkpoint``: the run's own overrides plus ckpt_path."""
    import shlex

    from rnnlab.runtime.distributed import command_line_overrides

    dropped = ("ckpt_path=", "hydra.run.dir=", "paths.run_dir=")
    keep = [o for o in command_line_overrides() if not o.lstrip("+~").startswith(dropped)]
    return " ".join(["rnnlab-train", *(shlex.quote(o) for o in keep), shlex.quote(f"ckpt_path={shown(checkpoint)}")])


def shown(path: Any) -> str:
    text = str(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:
        return text
    return text if rel.startswith("..") else rel


def keep_earlier_rows(loggers: Any, step: int) -> None:
    """A run that resumes in its own directory (rnnlab.runtime.rundir.resumes_in_place) at ``step``: Lightning's
    CSVLogger deletes the ``metrics.csv`` it finds when it starts, so the rows the earlier attempt logged before
    ``step`` are read first and written back as the new file's first rows. metrics.csv then holds the whole run,
    as if it had not stopped; the earlier attempt's rows from ``step`` on (steps past its last checkpoint, which
    the resumed run trains again) are dropped. Rows an attempt killed with SIGKILL had not yet written are not
    there to keep."""
    import csv
    import warnings

    from lightning.pytorch.loggers import CSVLogger

    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as fh:
            rows = [row for row in csv.DictReader(fh) if _step_of(row) < step]
        with warnings.catch_warnings():  # "Previous log files in this directory will be deleted": not these rows
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = logger.experiment  # Lightning's writer: removes metrics.csv
        if rows:
            writer.metrics[:0] = rows
            writer.save()


def _step_of(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return math.nan
