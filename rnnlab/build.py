"""Config -> objects: the Trainer with its callbacks, loggers and plugins, and the task module with its network.

Each ``_target_`` of ``callbacks.*`` and ``logger.*`` is instantiated by Hydra; a bad one ends in one line naming
its key. The task module is built from the data module (vocabulary, classes, feature width) and the seed, with the
one initializer both backends share. Imports lightning inside the functions only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rnnlab.errors import ConfigError
from rnnlab.summary import container


def instantiate_all(node: Any, what: str) -> list[tuple[str, Any]]:
    """(key, object) for every entry of ``node`` that is not null."""
    from hydra.utils import instantiate

    objects = []
    for key, entry in (node or {}).items():
        if entry is None:
            continue
        try:
            objects.append((f"{what}.{key}", instantiate(entry)))
        except Exception as err:  # a bad _target_ or argument: name the key
            cause = err.__cause__ or err
            raise ConfigError(f"{what}.{key}: {str(cause).splitlines()[0]}") from err
    return objects


def build_task(cfg: DictConfig, datamodule: Any, seed: int) -> Any:
    from rnnlab.backends import backend as backend_named
    from rnnlab.models.init import init_parameters
    from rnnlab.models.spec import NetSpec
    from rnnlab.tasks import task_class

    task_cls = task_class(cfg.task.name)
    extra: dict[str, Any] = {}
    if getattr(datamodule, "pad_id", None) is not None:
        extra["padding_idx"] = datamodule.pad_id
    if getattr(datamodule, "input_features", 0):  # float inputs [B, T, F] instead of token ids
        extra["input_features"] = int(datamodule.input_features)
    initializer = init_parameters
    if hasattr(task_cls, "build_spec"):  # a task with a network of its own (seq2seq): its spec and initializer
        spec, initializer = task_cls.build_spec(cfg.model, datamodule), task_cls.init_arrays
    else:
        spec = NetSpec.from_model_config(cfg.model, len(datamodule.vocab), datamodule.num_outputs, **extra)
    backend = backend_named(cfg.model.backend)
    float64 = is_float64(cfg.trainer.precision)
    task = task_cls(
        spec=spec.to_dict(),
        optimizer=container(cfg.optimizer),
        task=container(cfg.task),
        vocab=datamodule.vocab.itos,
        seed=seed,
        backend=backend.name,
        weight_noise=float(cfg.model.get("weight_noise", 0.0)),
        scheduler=container(cfg.scheduler) if cfg.get("scheduler") is not None else None,
        **backend.task_options(cfg.trainer, float64),  # NumPy: its dtype, and the clipping and accumulation it does
    )
    backend.finish_build(task, float64, lambda: initializer(spec, seed))  # torch float64: the float64 draws
    return task


def is_float64(precision: Any) -> bool:
    return str(precision) in ("64", "64-true", "double")


def cluster_plugins() -> list[Any]:
    """Under a submitit SLURM job, Lightning's own SLURM auto-requeue (SIGUSR1) is switched off: submitit's
    requeue signal is the one rnnlab follows (rnnlab.runtime.signals), and one mechanism requeues, not two."""
    if "SUBMITIT_EXECUTOR" not in os.environ and "SUBMITIT_FOLDER" not in os.environ:
        return []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]


@dataclass
class TrainerParts:
    """The Trainer of a run and the callbacks the run itself talks to."""

    trainer: Any
    saver: Any  # the ModelCheckpoint (last.ckpt and the best one), or None
    stop: Any  # GracefulStop: the signal contract's end of a step
    record: Any  # RunRecord: what a checkpoint records about its run
    numpy_summary: bool  # Lightning's model summary was switched off for a NumPy network: log rnnlab's


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    claim: Any,
    signals: Any,
    ckpt_path: str | None,
    plan: Any,
    seed: int,
    extra_callbacks: Sequence[Any] = (),
) -> TrainerParts:
    """The Trainer of ``cfg.trainer`` with the callbacks of ``cfg.callbacks`` (plus ``extra_callbacks``), the
    loggers of ``cfg.logger``, atomic checkpoint writing and rnnlab's signal and record callbacks. Every directory a
    callback or logger writes to must lie inside a directory the run owns (``claim``)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
    from lightning.pytorch.plugins.io import CheckpointIO

    from rnnlab.runtime import rundir
    from rnnlab.runtime.callbacks import GracefulStop, RunRecord
    from rnnlab.runtime.checkpointing import AtomicCheckpointIO
    from rnnlab.runtime.resume import data_fingerprint, run_record

    numpy_summary = False
    named_callbacks = instantiate_all(cfg.callbacks, "callbacks")
    named_loggers = instantiate_all(cfg.logger, "logger")
    callbacks = [c for _, c in named_callbacks]
    if cfg.trainer.enable_progress_bar is False:  # trainer.enable_progress_bar=false wins over the callback
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks += list(extra_callbacks)
    loggers = [logger for _, logger in named_loggers]
    if claim is not None:  # every directory the run writes to lies inside a directory it owns
        for key, callback in named_callbacks:
            rundir.check_inside(getattr(callback, "dirpath", None), f"{key}.dirpath")
        for key, logger in named_loggers:
            rundir.check_inside(getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None), key)
        rundir.check_inside(cfg.trainer.default_root_dir, "trainer.default_root_dir")
    trainer_kwargs = container(cfg.trainer)
    if cfg.model.backend == "numpy":
        # Manual optimization: Lightning refuses its own clipping and accumulation (the task does both), and
        # the arrays live on the CPU whatever devices the machine has.
        trainer_kwargs.update(gradient_clip_val=None, gradient_clip_algorithm=None, accumulate_grad_batches=1)
        if trainer_kwargs.get("accelerator") == "auto":
            trainer_kwargs["accelerator"] = "cpu"
        if trainer_kwargs.get("enable_model_summary") is not False:
            # Lightning's summary counts torch parameters only (none here): say what the NumPy network holds
            trainer_kwargs["enable_model_summary"] = False
            numpy_summary = True
    if trainer_kwargs.get("default_root_dir") is None:  # figures (rnnlab.plots) go under the run directory
        trainer_kwargs["default_root_dir"] = str(run_dir)
    if trainer_kwargs.get("enable_checkpointing") is None:  # callbacks=none means no checkpoints at all
        trainer_kwargs["enable_checkpointing"] = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    if not any(isinstance(p, CheckpointIO) for p in trainer_kwargs.get("plugins") or []):
        trainer_kwargs["plugins"] = [*(trainer_kwargs.get("plugins") or []), AtomicCheckpointIO()]
    trainer_kwargs["plugins"] = [*trainer_kwargs["plugins"], *cluster_plugins()]
    saver = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    if saver is not None and hasattr(saver, "resumed_from"):
        saver.resumed_from = ckpt_path
    stop = GracefulStop(signals, getattr(saver, "save_last_now", None), claim)
    record = RunRecord(run_record(cfg, seed, data_fingerprint(cfg.data)), plan)
    callbacks = [*callbacks, stop, record]
    try:
        trainer = L.Trainer(**trainer_kwargs, callbacks=callbacks, logger=loggers or False)
    except Exception as err:  # Lightning's MisconfigurationException, ValueError, TypeError
        raise ConfigError(f"trainer: {str(err).splitlines()[0]}") from err
    return TrainerParts(trainer, saver, stop, record, numpy_summary)
