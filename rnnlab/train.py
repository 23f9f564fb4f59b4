"""``train(cfg)``: config -> data module, task module, Trainer; fit, then test the best checkpoint.

Kept apart from the ``@hydra.main`` wrapper (rnnlab.cli) so that tests and other programs can call it with a
config from ``hydra.compose``. torch and lightning are imported inside the function: the command line answers
``--help`` and ``--cfg job`` without loading them.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.atomic import write_json
from rnnlab.config import validate
from rnnlab.errors import ConfigError, DivergenceError


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def flat_hparams(cfg: DictConfig, seed: int) -> dict[str, Any]:
    """The hyperparameters a person compares runs by, flat and scalar (for TensorBoard's HPARAMS tab)."""
    out: dict[str, Any] = {"seed": seed, "threads": cfg.get("threads")}
    for group in ("model", "task", "data", "optimizer"):
        for key, value in _container(cfg[group]).items():
            if isinstance(value, list):
                value = str(value)
            out[f"{group}/{key}"] = value
    for key in ("max_steps", "max_epochs", "precision", "gradient_clip_val"):
        out[f"trainer/{key}"] = cfg.trainer[key]
    return {k: ("null" if v is None else v) for k, v in out.items()}


def check_inputs(cfg: DictConfig) -> None:
    """Checks that read the disk but need no torch: the checkpoint to resume and the data file."""
    if cfg.ckpt_path is not None:
        check_checkpoint_file(cfg.ckpt_path)
    if cfg.data.get("path") is not None:
        from rnnlab.data.token_cache import check_text

        check_text(cfg.data.path, cfg.paths.cache_dir)  # streamed; only the cheap checks once its tokens are cached


def check_checkpoint_file(ckpt_path: str) -> None:
    """``ckpt_path`` is a file that can hold a torch checkpoint (a zip archive, as torch.save writes, or a legacy
    pickle); one line otherwise. Reads 4 bytes, no torch."""
    p = Path(ckpt_path).expanduser()
    if p.is_dir():
        raise ConfigError(f"ckpt_path: a directory, not a checkpoint file: {p}")
    if not p.is_file():
        raise ConfigError(f"ckpt_path: no such checkpoint file: {p}")
    try:
        with p.open("rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise ConfigError(f"ckpt_path: cannot read {p}: {err.strerror or err}") from err
    if not head:
        raise ConfigError(f"ckpt_path: the file is empty: {p}")
    if not (head == b"PK\x03\x04" or head[:1] == b"\x80"):
        raise ConfigError(f"ckpt_path: not a checkpoint (not a torch.save archive): {p}")


def load_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """A Lightning checkpoint, memory-mapped; one line for a file torch cannot read or that Lightning did not
    write."""
    import torch

    try:
        saved = torch.load(Path(ckpt_path).expanduser(), map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # zip, pickle and mmap errors all mean "not a checkpoint"
        raise ConfigError(f"ckpt_path: not a checkpoint ({type(err).__name__}): {ckpt_path}") from err
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ConfigError(f"ckpt_path: not a Lightning checkpoint: {ckpt_path}")
    return saved


def load_checkpoint_hparams(ckpt_path: str) -> dict[str, Any]:
    """The hyperparameters of a Lightning checkpoint (one-line errors as :func:`load_checkpoint`)."""
    return load_checkpoint(ckpt_path).get("hyper_parameters") or {}


def check_checkpoint_run(ckpt_path: str, cfg: DictConfig, saved: dict[str, Any] | None = None) -> None:
    """Before any data is loaded: the checkpoint was written by this backend, task and optimizer (the network
    itself is compared once it is built, :func:`check_checkpoint_matches`)."""
    hparams = (saved if saved is not None else load_checkpoint(ckpt_path)).get("hyper_parameters") or {}
    for key, theirs, ours in (
        ("model.backend", hparams.get("backend", "torch"), cfg.model.backend),
        ("task", (hparams.get("task") or {}).get("name"), cfg.task.name),
        ("optimizer", (hparams.get("optimizer") or {}).get("name"), cfg.optimizer.name),
    ):
        if theirs is not None and str(theirs) != str(ours):
            raise ConfigError(
                f"ckpt_path: the checkpoint was written by {key}={theirs}, this run uses {key}={ours}: {ckpt_path}"
            )


def _instantiate_all(node: Any, what: str) -> list[tuple[str, Any]]:
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
    backend = str(cfg.model.backend)
    numpy_extra = {}
    if backend == "numpy":  # the NumPy task clips and accumulates itself, with the trainer's settings
        numpy_extra = dict(
            dtype="float64" if is_float64(cfg.trainer.precision) else "float32",
            clip={"value": cfg.trainer.gradient_clip_val, "algorithm": cfg.trainer.gradient_clip_algorithm},
            accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        )
    task = task_cls(
        spec=spec.to_dict(),
        optimizer=_container(cfg.optimizer),
        task=_container(cfg.task),
        vocab=datamodule.vocab.itos,
        seed=seed,
        backend=backend,
        **numpy_extra,
    )
    if backend == "torch" and is_float64(cfg.trainer.precision):
        # Convert before Lightning does, and copy the draws again: a float64 run then starts from the exact
        # float64 arrays (not their float32 roundings), and a resumed checkpoint loads into float64 parameters.
        task.double()
        task.net.load_arrays(initializer(spec, seed))
    return task


def is_float64(precision: Any) -> bool:
    return str(precision) in ("64", "64-true", "double")


def check_checkpoint_matches(ckpt_path: str, model: Any) -> None:
    """A checkpoint of another network fails with one line that says what differs."""
    hparams = load_checkpoint_hparams(ckpt_path)
    if hparams.get("backend", "torch") != model.backend:
        raise ConfigError(
            f"ckpt_path: the checkpoint was written by model.backend={hparams.get('backend', 'torch')}, "
            f"this run uses model.backend={model.backend}: {ckpt_path}"
        )
    theirs, ours = hparams.get("spec"), model.spec.to_dict()
    if theirs is not None:  # keys added to NetSpec since the checkpoint was written take their defaults
        import dataclasses

        defaults = {f.name: f.default for f in dataclasses.fields(model.spec) if f.default is not dataclasses.MISSING}
        theirs = {**defaults, **theirs}
    if theirs is not None and theirs != ours:
        diff = ", ".join(
            f"{k}={theirs.get(k)} in the checkpoint but {v} here" for k, v in ours.items() if theirs.get(k) != v
        )
        raise ConfigError(f"ckpt_path: the checkpoint holds another network ({diff}): {ckpt_path}")


def _no_advert(record: Any) -> bool:
    return "litlogger" not in record.getMessage()  # Lightning's tip to install a cloud logger


def _route_lightning_logs() -> None:
    """Under Hydra the root logger already prints to the console and to the run's log file; drop Lightning's
    own console handler so that each message appears once."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # torch/lightning churn
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            named = logging.getLogger(name)
            for handler in list(named.handlers):
                named.removeHandler(handler)
            named.propagate = True
        for handler in logging.getLogger().handlers:
            if _no_advert not in handler.filters:
                handler.addFilter(_no_advert)


def train(cfg: DictConfig) -> float | None:
    """Train and test one configuration; returns ``cfg.optimized_metric`` (for sweepers), or None.

    The run owns ``paths.run_dir`` (rnnlab.runtime.rundir: claimed before anything is written, given back if the
    run ends before its first training step) and follows the signal contract (rnnlab.runtime.signals: SIGTERM
    and SIGINT end the fit at the end of a step with a checkpoint, raising RunInterrupted). Rank 0 ends by writing
    ``<run_dir>/summary.json`` (:func:`run_summary`) and, for TensorBoard loggers, the hyperparameters with the
    final metrics (the HPARAMS tab).
    """
    from rnnlab.runtime import rundir
    from rnnlab.runtime.signals import RunInterrupted, SignalContract

    started = time.perf_counter()
    validate(cfg)
    check_inputs(cfg)
    run_dir = Path(str(cfg.paths.run_dir)).expanduser()
    worker = rundir.launched_worker()
    claim = None if worker else rundir.held(run_dir)
    took = claim is None and not worker
    outcome = "failed"
    from rnnlab.provenance import ThreadCount

    with SignalContract() as signals, ThreadCount(cfg.get("threads")) as threads:
        try:
            if took:
                claim = rundir.claim(run_dir, "run", "paths.run_dir")
            value = _train(cfg, run_dir, claim, signals, started, threads)
            outcome = "completed"
            return value
        except RunInterrupted as err:
            outcome = "interrupted"
            if claim is not None and not claim.holds_results():
                raise RunInterrupted(err.signum, f"{err.message} before the first training step; nothing to resume "
                                     "(the run directory was given back)") from None  # fmt: skip
            raise
        finally:
            if claim is not None:
                if took and outcome != "completed" and not claim.holds_results():
                    claim.release()  # it ended before its first training step: the directory is given back
                else:
                    claim.finish(outcome)


def _train(cfg: DictConfig, run_dir: Path, claim: Any, signals: Any, started: float, threads: Any) -> float | None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
    from lightning.pytorch.plugins.io import CheckpointIO
    from lightning.pytorch.utilities import rank_zero_only
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from rnnlab.checkpointing import AtomicCheckpointIO
    from rnnlab.data.datamodules import build_datamodule
    from rnnlab.provenance import data_checksum
    from rnnlab.runtime import rundir
    from rnnlab.runtime.callbacks import GracefulStop, RunRecord
    from rnnlab.runtime.resume import check_finite, data_fingerprint, plan_resume, run_record
    from rnnlab.runtime.signals import RunInterrupted

    _route_lightning_logs()
    ckpt_path = cfg.ckpt_path
    if ckpt_path is None and claim is not None and claim.taken_back:  # a requeued SLURM job: its own last.ckpt
        last = run_dir / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if last.is_file() else None
    plan = None
    if ckpt_path is not None:
        saved = load_checkpoint(ckpt_path)
        check_finite(saved, ckpt_path)
        check_checkpoint_run(ckpt_path, cfg, saved)
        plan = plan_resume(cfg, saved, ckpt_path)
        del saved
    seed = plan.seed if plan is not None else (cfg.seed if cfg.seed is not None else secrets.randbelow(2**31))
    L.seed_everything(seed, workers=True, verbose=False)

    # The Trainer is built before the data is loaded, so that a bad trainer argument fails at once
    numpy_summary = False
    named_callbacks = _instantiate_all(cfg.callbacks, "callbacks")
    named_loggers = _instantiate_all(cfg.logger, "logger")
    callbacks = [c for _, c in named_callbacks]
    if cfg.trainer.enable_progress_bar is False:  # trainer.enable_progress_bar=false wins over the callback
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = [logger for _, logger in named_loggers]
    if claim is not None:  # every directory the run writes to lies inside a directory it owns
        for key, callback in named_callbacks:
            rundir.check_inside(getattr(callback, "dirpath", None), f"{key}.dirpath")
        for key, logger in named_loggers:
            rundir.check_inside(getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None), key)
        rundir.check_inside(cfg.trainer.default_root_dir, "trainer.default_root_dir")
    trainer_kwargs = _container(cfg.trainer)
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
    trainer_kwargs["plugins"] = [*trainer_kwargs["plugins"], *_cluster_plugins()]
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

    datamodule = build_datamodule(cfg.data, seed, cfg.paths.cache_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    record.record["data"] = data_checksum(datamodule.source_files(), _container(cfg.data))
    check_val_interval(cfg, datamodule)
    prompt = cfg.task.get("sample_prompt") or ""
    unknown = [ch for ch in prompt if ch not in datamodule.vocab.stoi]
    if unknown:
        raise ConfigError(f"task.sample_prompt: character {unknown[0]!r} does not occur in data={cfg.data.name}")
    model = build_task(cfg, datamodule, seed)
    check_monitor(cfg, model, datamodule)
    if ckpt_path is not None:
        check_checkpoint_matches(ckpt_path, model)
    if numpy_summary:
        _log_numpy_summary(model.net)
    if plan is not None:
        plan.announce()

    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = OmegaConf.to_yaml(OmegaConf.create(_container(cfg)))
        (run_dir / "config_resolved.yaml").write_text(f"# seed used: {seed}\n{resolved}")
    for logger in trainer.loggers:
        logger.log_hyperparams(flat_hparams(cfg, seed))

    threads.apply()  # the pools of libraries loaded since the run began
    signals.in_fit = True
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except DivergenceError as err:  # no last.ckpt of the diverged weights; summary.json says why the run failed
        if trainer.global_rank == 0:
            summary = failed_summary(cfg, model, trainer, seed, err, time.perf_counter() - started)
            write_json(run_dir / "summary.json", summary)
        raise
    except (RunInterrupted, SIGTERMException, KeyboardInterrupt) as err:
        _interrupted(cfg, model, trainer, seed, stop, run_dir, started, err)
    except SystemExit as err:
        if signals.signum is None:  # Lightning's KeyboardInterrupt path ends in sys.exit(1)
            raise
        _interrupted(cfg, model, trainer, seed, stop, run_dir, started, err)
    except Exception as err:
        translated = _lightning_config_error(err, cfg)
        if translated is err:
            raise
        raise translated from err
    finally:
        signals.in_fit = False
    if signals.signum is not None:  # the signal came as the fit ended
        _interrupted(cfg, model, trainer, seed, stop, run_dir, started, None)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    try:
        return _finish(cfg, model, trainer, datamodule, saver, run_dir, seed, metrics, started)
    except RunInterrupted as err:
        _interrupted(cfg, model, trainer, seed, stop, run_dir, started, err)
    return None  # not reached: _interrupted raises


def _finish(
    cfg: DictConfig,
    model: Any,
    trainer: Any,
    datamodule: Any,
    saver: Any,
    run_dir: Path,
    seed: int,
    metrics: dict[str, float],
    started: float,
) -> float | None:
    """After the fit: a validation if none ran, the test split with the best checkpoint, the report and the
    summary."""
    import logging

    log = logging.getLogger("rnnlab")
    if cfg.optimized_metric and cfg.optimized_metric not in metrics and _can_validate(trainer):
        # max_steps ended the fit before its first validation (a short sweep trial): score the final weights,
        # so that the sweeper still gets a value. After last.ckpt is written: a validation may change state that a
        # resume needs (the language model's carried hidden state)
        log.info("No validation ran during fit: validating the final weights")
        results = trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})

    test_metrics: dict[str, float] = {}
    best_path = saver.best_model_path if saver is not None else ""
    if best_path and not Path(best_path).is_file():
        log.warning("The best checkpoint %s is gone: testing the final weights instead", best_path)
        best_path = ""
    if cfg.run_test and not trainer.interrupted:
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}

    best = {}  # the monitored metric's best validation, the one the test split was scored with
    if saver is not None and saver.monitor and saver.best_model_score is not None:
        best[saver.monitor] = float(saver.best_model_score)
    value = None
    if cfg.optimized_metric:
        value = best.get(cfg.optimized_metric, metrics.get(cfg.optimized_metric))
    _report(cfg, model, trainer, run_dir, seed, metrics, test_metrics)
    if trainer.global_rank == 0:
        final = {
            "val/loss": metrics.get("val/loss"),
            cfg.task.monitor: best.get(cfg.task.monitor, metrics.get(cfg.task.monitor)),
            **test_metrics,
        }
        _log_hparams_with_metrics(trainer, flat_hparams(cfg, seed), final)
        summary = run_summary(cfg, model, trainer, seed, metrics, test_metrics, value, time.perf_counter() - started)
        write_json(run_dir / "summary.json", summary)
    return value


def _interrupted(
    cfg: DictConfig, model: Any, trainer: Any, seed: int, stop: Any, run_dir: Path, started: float, err: Any
) -> None:
    """A signal ended the run: summary.json says so (and where to resume from); raise RunInterrupted with the one
    line for the user. Under a SLURM launcher the preemption signal is then handed to submitit, which requeues."""
    from rnnlab.callbacks import last_good_checkpoint
    from rnnlab.runtime.signals import RunInterrupted, signal_name

    signals = stop.signals
    signum = signals.signum or getattr(err, "signum", None) or 15
    checkpoint = stop.saved or _last_checkpoint(trainer) or last_good_checkpoint(trainer)
    if checkpoint is not None and not Path(checkpoint).is_file():
        checkpoint = None
    step = int(trainer.global_step)
    ckpt_step = _checkpoint_step(checkpoint) if checkpoint else None
    where = f"step {step}" + (" (during validation)" if stop.mid_validation else "")
    if checkpoint is None:
        resume = "no checkpoint was written, so a new run starts from scratch"
    else:
        resume = f"resume: {resume_command(cfg, checkpoint)}"
        if ckpt_step is not None and ckpt_step != step:
            resume = f"the last checkpoint is from step {ckpt_step}; {resume}"
    line = f"interrupted by {signal_name(signum)} at {where}; {resume}"
    if trainer.global_rank == 0:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        summary = run_summary(cfg, model, trainer, seed, metrics, {}, None, time.perf_counter() - started)
        summary.update(
            status="interrupted",
            error=line,
            interrupted={"signal": signal_name(signum), "step": step, "checkpoint": checkpoint,
                         "checkpoint_step": ckpt_step, "stopped": stop.stop_point},
        )  # fmt: skip
        write_json(run_dir / "summary.json", summary)
    if signals.is_preemption:
        signals.requeue()
    raise RunInterrupted(signum, line) from (err if isinstance(err, BaseException) else None)


def _last_checkpoint(trainer: Any) -> str | None:
    """The run's own last.ckpt, if it has written one."""
    for saver in trainer.checkpoint_callbacks:
        if getattr(saver, "dirpath", None) and getattr(saver, "save_last", False):
            path = Path(saver.dirpath) / f"{saver.CHECKPOINT_NAME_LAST}{saver.FILE_EXTENSION}"
            if path.is_file():
                return str(path)
    return None


def _checkpoint_step(path: str) -> int | None:
    try:
        return int(load_checkpoint(path).get("global_step"))
    except (ConfigError, TypeError, ValueError):
        return None


def resume_command(cfg: DictConfig, checkpoint: str) -> str:
    """The command that resumes this run from ``checkpoint``: the run's own overrides plus ckpt_path."""
    import shlex

    from rnnlab.distributed import command_line_overrides

    dropped = ("ckpt_path=", "hydra.run.dir=", "paths.run_dir=")
    keep = [o for o in command_line_overrides() if not o.lstrip("+~").startswith(dropped)]
    return " ".join(["rnnlab-train", *(shlex.quote(o) for o in keep), shlex.quote(f"ckpt_path={_shown(checkpoint)}")])


def _shown(path: Any) -> str:
    text = str(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:
        return text
    return text if rel.startswith("..") else rel


def _cluster_plugins() -> list[Any]:
    """Under a submitit SLURM job, Lightning's own SLURM auto-requeue (SIGUSR1) is switched off: submitit's
    requeue signal is the one rnnlab follows (rnnlab.runtime.signals), and one mechanism requeues, not two."""
    if "SUBMITIT_EXECUTOR" not in os.environ and "SUBMITIT_FOLDER" not in os.environ:
        return []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]


def check_val_interval(cfg: DictConfig, datamodule: Any) -> None:
    """An integer ``trainer.val_check_interval`` counts batches within an epoch (unless
    ``check_val_every_n_epoch=null``): it cannot exceed the epoch's training batches."""
    interval, every = cfg.trainer.val_check_interval, cfg.trainer.check_val_every_n_epoch
    if not isinstance(interval, int) or isinstance(interval, bool) or every is None:
        return
    try:
        batches = len(datamodule.train_dataloader())
    except (TypeError, NotImplementedError):  # a stream without a length
        return
    limit = cfg.trainer.limit_train_batches
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    if interval > batches:
        raise ConfigError(
            f"trainer.val_check_interval={interval} is more than the {batches} training batches of an epoch of "
            f"data={cfg.data.name}; use at most {batches}, a fraction of the epoch (0.5), or "
            f"trainer.check_val_every_n_epoch=null to count batches across epochs"
        )


def check_monitor(cfg: DictConfig, model: Any, datamodule: Any) -> None:
    """``task.monitor`` names a validation metric the task logs (a typo would end the first validation)."""
    monitor = str(cfg.task.monitor)
    names = model.validation_metrics(datamodule) if hasattr(model, "validation_metrics") else None
    if names is None:
        return
    logged = sorted(f"val/{n}" for n in names)
    if monitor.startswith("test/") or (monitor.startswith("val/") and monitor not in logged):
        raise ConfigError(
            f"task.monitor={monitor}: task={cfg.task.name} with data={cfg.data.name} never logs it during training; "
            f"it logs {', '.join(logged)}"
        )


def _lightning_config_error(err: Exception, cfg: DictConfig) -> Exception:
    """Lightning's complaints about the trainer's settings that only the fit finds, as one line naming the key."""
    text = str(err).splitlines()[0] if str(err) else ""
    if "val_check_interval" in text:
        return ConfigError(f"trainer.val_check_interval: {text.replace('`', '')}")
    if "could not find the monitored key" in text:
        return ConfigError(f"task.monitor={cfg.task.monitor}: the task never logs it ({text.replace('`', '')})")
    return err


def _can_validate(trainer: Any) -> bool:
    return not (trainer.interrupted or trainer.fast_dev_run or trainer.limit_val_batches == 0)


def _log_hparams_with_metrics(trainer: Any, hparams: dict[str, Any], metrics: dict[str, float | None]) -> None:
    """Log the hyperparameters again, now with the run's final metrics (``val/acc`` as ``hparams/val_acc``), so
    that TensorBoard's HPARAMS tab can compare runs by them."""
    from lightning.pytorch.loggers import TensorBoardLogger

    final = {"hparams/" + k.replace("/", "_"): v for k, v in metrics.items() if v is not None}
    if not final:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, metrics=final, step=trainer.global_step)
            logger.finalize("success")  # flush (the writer reopened after the fit closed it)


def count_parameters(model: Any) -> int:
    """The network's trainable numbers: torch parameters, or the NumPy arrays of model.backend=numpy."""
    if getattr(model, "is_numpy", False):
        return int(sum(p.size for p in model.net.params.values()))
    return int(sum(p.numel() for p in model.parameters()))


def step_statistics(step_times: list[float], step_samples: list[int]) -> tuple[float | None, float | None]:
    """(median step in ms, samples per second), skipping the first 5 steps as warm-up when there are more than 10."""
    skip = 5 if len(step_times) > 10 else 0
    times, samples = step_times[skip:], step_samples[skip:]
    if not times or sum(times) <= 0:
        return None, None
    return statistics.median(times) * 1e3, (sum(samples) / sum(times) if samples else None)


def run_summary(
    cfg: DictConfig,
    model: Any,
    trainer: Any,
    seed: int,
    metrics: dict[str, float],
    test_metrics: dict[str, float],
    value: float | None,
    wall_s: float,
) -> dict[str, Any]:
    """The content of ``summary.json``: one run's outcome, for rnnlab-report (which relies on these keys)."""
    from rnnlab.callbacks import PeakMemory, Timing
    from rnnlab.provenance import environment
    from rnnlab.runtime.callbacks import RunRecord

    timing = next((c for c in trainer.callbacks if isinstance(c, Timing)), None)
    memory = next((c for c in trainer.callbacks if isinstance(c, PeakMemory)), None)
    record = next((c for c in trainer.callbacks if isinstance(c, RunRecord)), None)
    data = (record.record.get("data") if record is not None else None) or {}
    step_ms, samples_per_s = step_statistics(timing.step_times, timing.step_samples) if timing else (None, None)
    return {
        "status": "interrupted" if trainer.interrupted else "completed",
        "seed": seed,
        "hparams": flat_hparams(cfg, seed),
        "fit_metrics": metrics,
        "test_metrics": test_metrics,
        "optimized_metric": cfg.optimized_metric,
        "optimized_value": value,
        "num_params": count_parameters(model),
        "step_ms_median": step_ms,
        "samples_per_s": samples_per_s,
        "peak_rss_mb": memory.peak_rss_mb if memory else None,
        "peak_rss_delta_mb": memory.peak_rss_delta_mb if memory else None,
        "wall_s": wall_s,
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "backend": str(cfg.model.backend),
        "world_size": int(trainer.world_size),  # processes of the run (DDP); samples_per_s is rank 0's share
        "cell": str(cfg.model.cell),
        "task": str(cfg.task.name),
        "data": str(cfg.data.name),
        "data_sha256": data.get("sha256"),  # of the files the data is read from, or of a generator's settings
        "data_sources": data.get("of"),
        "threads": cfg.get("threads"),
        "environment": environment(),  # machine, libraries and builds, thread counts, git commit
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def failed_summary(
    cfg: DictConfig, model: Any, trainer: Any, seed: int, err: DivergenceError, wall_s: float
) -> dict[str, Any]:
    """summary.json of a run stopped by a divergence: ``status`` "failed", ``error`` (the one line) and
    ``divergence`` (what, value, step, epoch, batch, last good checkpoint); non-finite metrics are written as null."""
    import math

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
    summary = run_summary(cfg, model, trainer, seed, metrics, {}, None, wall_s)  # type: ignore[arg-type]
    summary.update(status="failed", error=str(err).splitlines()[0], divergence=err.details())
    return summary


def _log_numpy_summary(net: Any) -> None:
    import logging

    sizes = {name: int(p.size) for name, p in net.params.items()}
    parts = {}
    for name, size in sizes.items():
        parts[name.split(".", 1)[0]] = parts.get(name.split(".", 1)[0], 0) + size
    detail = ", ".join(f"{part} {n:,}" for part, n in parts.items())
    logging.getLogger("rnnlab").info(
        "NumPy network (%s, %s): %s parameters (%s)", net.spec.cell, net.dtype, f"{sum(sizes.values()):,}", detail
    )


def _report(
    cfg: DictConfig,
    model: Any,
    trainer: Any,
    run_dir: Path,
    seed: int,
    metrics: dict[str, float],
    test_metrics: dict[str, float],
) -> None:
    """The end-of-run summary: test metrics, a generated sample, where the run is and how to look at it."""
    if trainer.global_rank != 0:
        return
    lines = [
        "",
        f"== rnnlab: {cfg.task.name.value} | {cfg.model.cell.value} ({cfg.model.backend.value}) | "
        f"data={cfg.data.name} | seed={seed} ==",
    ]
    shown = {**{k: v for k, v in metrics.items() if k.startswith("val/")}, **test_metrics}
    if shown:
        lines.append("  " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
    if "test/bpc" in test_metrics:
        lines.append(f"  test bits per character: {test_metrics['test/bpc']:.4f}")
    if cfg.print_sample and hasattr(model, "generate"):
        t = cfg.task
        sample = model.generate(t.sample_prompt, max(t.sample_length, 1), t.temperature, t.top_k)
        lines += ["", f"-- generated sample (temperature {t.temperature:g}) --", sample, "-- end of sample --"]
    if run_dir.is_dir():
        rel = os.path.relpath(run_dir)
        wrote = (("checkpoints", "checkpoints/"), ("metrics", "csv/metrics.csv"))
        files = [f"{name}: {rel}/{path}" for name, path in wrote if (run_dir / path).exists()]
        lines += ["", f"Run directory: {rel}"]
        if files:
            lines.append("  " + "   ".join(files))
        if (run_dir / "tensorboard").is_dir():
            every = f"(or --logdir {cfg.paths.output_dir} for every run)"
            lines.append(f"  TensorBoard: tensorboard --logdir {rel}   {every}")
    print("\n".join(lines), flush=True)
