"""``train(cfg)``: config -> data module, task module, Trainer; fit, then test the best checkpoint; return the
metrics and the objects (lightning-hydra-template's shape).

Orchestration only: the checks live in rnnlab.checks, the objects are built by rnnlab.build, what the run prints
by rnnlab.console, summary.json by rnnlab.summary, and the run directory, signals and resume rules by
rnnlab.runtime. Kept apart from the ``@hydra.main`` wrapper (rnnlab.cli) so that tests and other programs can call
it with a config from ``hydra.compose``. torch and lightning are imported inside the functions: the command line
answers ``--help`` and ``--cfg job`` without loading them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.atomic import write_text
from rnnlab.build import build_task, build_trainer
from rnnlab.checks import (
    check_checkpoint_matches,
    check_checkpoint_run,
    check_early_stopping,
    check_inputs,
    check_monitor,
    check_prompt,
    check_val_interval,
    lightning_config_error,
    load_checkpoint,
)
from rnnlab.config import validate
from rnnlab.console import log_numpy_summary, report, route_lightning_logs
from rnnlab.errors import DivergenceError
from rnnlab.summary import container, failed_summary, flat_hparams, log_hparams_with_metrics, run_summary, write_summary


@dataclass
class RunResult:
    """What :func:`train` returns: the value a sweeper optimizes, the metrics, and the objects of the run."""

    value: float | None  # cfg.optimized_metric (the best validation value of the monitored metric), or None
    metrics: dict[str, float] = field(default_factory=dict)  # the fit's last logged metrics
    test_metrics: dict[str, float] = field(default_factory=dict)  # the test split, scored with the best checkpoint
    seed: int | None = None
    run_dir: Path | None = None
    objects: dict[str, Any] = field(default_factory=dict)  # cfg, datamodule, model, trainer


def train(cfg: DictConfig, *, callbacks: Sequence[Any] = ()) -> RunResult:
    """Train and test one configuration; returns its :class:`RunResult` (``.value`` is ``cfg.optimized_metric``,
    for sweepers). ``callbacks``: Lightning callbacks added to those of ``cfg.callbacks`` (a program's own probes).

    The run owns ``paths.run_dir`` (rnnlab.runtime.rundir: claimed before anything is written, given back if the
    run ends before its first training step) and follows the signal contract (rnnlab.runtime.signals: SIGTERM
    and SIGINT end the fit at the end of a step with a checkpoint, raising RunInterrupted). Rank 0 ends by writing
    ``<run_dir>/summary.json`` (rnnlab.summary) and, for TensorBoard loggers, the hyperparameters with the
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
            result = _train(cfg, run_dir, claim, signals, started, threads, callbacks)
            outcome = "completed"
            return result
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


def _train(
    cfg: DictConfig, run_dir: Path, claim: Any, signals: Any, started: float, threads: Any, callbacks: Sequence[Any]
) -> RunResult:
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from rnnlab.data.datamodules import build_datamodule
    from rnnlab.provenance import data_checksum
    from rnnlab.runtime import rundir
    from rnnlab.runtime.interrupted import end_interrupted
    from rnnlab.runtime.resume import check_finite, keep_earlier_rows, plan_resume
    from rnnlab.runtime.signals import RunInterrupted

    route_lightning_logs()
    ckpt_path = cfg.ckpt_path
    in_place = rundir.resumes_in_place(run_dir, claim) if ckpt_path is None else None
    if in_place is not None:  # a requeued SLURM job, a job of a resumed sweep: from its own last.ckpt
        ckpt_path = str(in_place)
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
    parts = build_trainer(cfg, run_dir, claim, signals, ckpt_path, plan, seed, callbacks)
    trainer, stop = parts.trainer, parts.stop
    datamodule = build_datamodule(cfg.data, seed, cfg.paths.cache_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    parts.record.record["data"] = data_checksum(datamodule.source_files(), container(cfg.data))
    check_val_interval(cfg, datamodule)
    check_early_stopping(cfg)
    check_prompt(cfg, datamodule)
    model = build_task(cfg, datamodule, seed)
    check_monitor(cfg, model, datamodule)
    if ckpt_path is not None:
        check_checkpoint_matches(ckpt_path, model)
    if parts.numpy_summary:
        log_numpy_summary(model.net)
    if plan is not None:
        plan.announce()

    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = OmegaConf.to_yaml(OmegaConf.create(container(cfg)))
        write_text(run_dir / "config_resolved.yaml", f"# seed used: {seed}\n{resolved}")
    if in_place is not None and plan is not None and rank_zero_only.rank == 0:
        keep_earlier_rows(trainer.loggers, plan.step)  # the earlier attempt's metrics.csv rows, before the log starts
    for logger in trainer.loggers:
        logger.log_hyperparams(flat_hparams(cfg, seed))

    threads.apply()  # the pools of libraries loaded since the run began
    signals.in_fit = True
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except DivergenceError as err:  # no last.ckpt of the diverged weights; summary.json says why the run failed
        if trainer.global_rank == 0:
            write_summary(run_dir, failed_summary(cfg, model, trainer, seed, err, time.perf_counter() - started))
        raise
    except (RunInterrupted, SIGTERMException, KeyboardInterrupt) as err:
        end_interrupted(cfg, model, trainer, seed, stop, run_dir, started, err)
    except SystemExit as err:
        if signals.signum is None:  # Lightning's KeyboardInterrupt path ends in sys.exit(1)
            raise
        end_interrupted(cfg, model, trainer, seed, stop, run_dir, started, err)
    except Exception as err:
        translated = lightning_config_error(err, cfg)
        if translated is err:
            raise
        raise translated from err
    finally:
        signals.in_fit = False
    if signals.signum is not None:  # the signal came as the fit ended
        end_interrupted(cfg, model, trainer, seed, stop, run_dir, started, None)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    try:
        value, test_metrics = _finish(cfg, model, trainer, datamodule, parts.saver, run_dir, seed, metrics, started)
    except RunInterrupted as err:
        end_interrupted(cfg, model, trainer, seed, stop, run_dir, started, err)
        raise  # not reached: end_interrupted raises
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}
    return RunResult(value, metrics, test_metrics, seed, run_dir, objects)


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
) -> tuple[float | None, dict[str, float]]:
    """After the fit: a validation if none ran, the test split with the best checkpoint, the report and the
    summary; (the optimized value, the test metrics)."""
    import logging

    log = logging.getLogger("rnnlab")
    if cfg.optimized_metric and cfg.optimized_metric not in metrics and can_validate(trainer):
        # max_steps ended the fit before its first validation (a short sweep trial): score the final weights,
        # so that the sweeper still gets a value. After last.ckpt is written: a validation may change state that a
        # resume needs (the language model's carried hidden state)
        log.info("No validation ran during fit: validating the final weights")
        results = trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})

    from rnnlab.runtime.pruning import trial_record
    from rnnlab.summary import stopped_early

    early = stopped_early(trainer)  # now: testing a checkpoint restores the callbacks' state from that checkpoint
    trial = trial_record(trainer)  # a trial of a pruning Optuna search: its reports, where it was pruned
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
    report(cfg, model, trainer, run_dir, seed, metrics, test_metrics, early)
    if trainer.global_rank == 0:
        final = {
            "val/loss": metrics.get("val/loss"),
            cfg.task.monitor: best.get(cfg.task.monitor, metrics.get(cfg.task.monitor)),
            **test_metrics,
        }
        log_hparams_with_metrics(trainer, flat_hparams(cfg, seed), final)
        wall_s = time.perf_counter() - started
        summary = run_summary(cfg, model, trainer, seed, metrics, test_metrics, value, wall_s, early=early, trial=trial)
        write_summary(run_dir, summary)
    return value, test_metrics


def can_validate(trainer: Any) -> bool:
    return not (trainer.interrupted or trainer.fast_dev_run or trainer.limit_val_batches == 0)
