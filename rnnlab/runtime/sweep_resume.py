"""Resuming a sweep: ``rnnlab-train -m <the sweep's command> resume_sweep=<the sweep's directory>``.

The sweep runs again in its own directory (``hydra.sweep.dir`` follows ``resume_sweep``, conf/hydra/default.yaml),
so every job gets the directory of the same job before (``<num>_<overrides>``; ``resume_sweep`` is left out of the
names). What each job does is decided in its task function (:func:`start_job`, called by rnnlab.cli), wherever the
launcher runs it (this process, a joblib worker, a submitit or SLURM job):

* its directory holds a completed run (summary.json ``completed``): it is **skipped**; nothing in the directory is
  touched, and the job returns the run's optimized value as if it had run;
* an unfinished run (interrupted by a signal, failed, killed without a summary) with a ``checkpoints/last.ckpt``:
  the job takes over the directory's claim (rnnlab.runtime.rundir: only once its owner is not running any more)
  and **resumes** there from that checkpoint (rnnlab.train), to the same result as an uninterrupted run;
* an unfinished run without a last.ckpt: the earlier attempt is set aside whole as ``<job dir>.partial-N``
  (:func:`rnnlab.runtime.rundir.set_aside`) and the job **starts again from scratch** in a new directory of its name;
* no directory (the job never started): the job runs as in any sweep.

A directory that holds another job (other overrides: a resume started with another command), or that a live process
owns, is refused with one line; the job writes nothing, and the sweep lists it at the end (rnnlab.runtime.sweeps).
Each job leaves a note of what it did in ``<sweep dir>/.rnnlab-resume/<job number>.json``, from which the sweep's
last line counts the jobs skipped, resumed and started afresh. An Optuna search is not resumed job by job: it
continues through its study's storage, and ``resume_sweep`` with the Optuna sweeper is refused.

This module stays light (no torch): it runs before every job of a resumed sweep.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab.runtime import rundir
from rnnlab.runtime.resume import shown as _shown
from rnnlab.runtime.rundir import NOT_A_SWEEP, OPTUNA, check_resumable, is_optuna, start_resumed_sweep
from rnnlab.runtime.sweeps import ACTIONS, NOTES, read_notes, summary_line

__all__ = ["ACTIONS", "NOTES", "NOT_A_SWEEP", "OPTUNA", "check_resumable", "is_optuna", "read_notes",
           "start_resumed_sweep", "summary_line"]  # fmt: skip


# ------------------------------------------------------------------------------------------- each job
@dataclass
class JobStart:
    """How a job of a resumed sweep begins: ``claim`` of its directory (None in a DDP process other than rank 0,
    or for a skipped job), ``skipped`` with the completed run's ``value``."""

    claim: rundir.Claim | None
    skipped: bool = False
    value: float | None = None


def recorded_overrides(job_dir: Path, owner: dict[str, Any]) -> list[str] | None:
    """The overrides of the job an earlier attempt ran in ``job_dir``: its owner record's, else Hydra's record
    (``.hydra/overrides.yaml``); None when neither says."""
    found = owner.get("overrides")
    if not isinstance(found, list):
        import yaml

        try:
            found = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return None
    if not isinstance(found, list):
        return None
    return rundir.without_resume(found)


def check_same_job(job_dir: Path, num: Any, mine: list[str], owner: dict[str, Any]) -> None:
    """``job_dir`` holds this very job (the same overrides, in any order), not another job whose directory has the
    same name (the names leave out ``seed`` and a few other keys)."""
    theirs = recorded_overrides(job_dir, owner)
    if theirs is None or sorted(theirs) == sorted(mine):
        return
    only_there = [o for o in theirs if o not in mine] or ["none"]
    only_here = [o for o in mine if o not in theirs] or ["none"]
    raise rundir.DirectoryTaken(
        f"resume_sweep: job {num}'s directory {_shown(job_dir)} holds another job ({' '.join(only_there)} there, "
        f"{' '.join(only_here)} here); resume a sweep with its own command, plus resume_sweep=..."
    )


def close_log_files(job_dir: Path, *, detach: bool) -> None:
    """Close the log files that Hydra opened for this job inside ``job_dir`` (``<job dir>/<job name>.log``, opened
    on its first line). ``detach``: also take them off their loggers, so that a skipped job's directory stays as it
    was whatever is logged until the next job (submitit's "Job completed successfully", say); else a file reopens
    on the next line, in the directory that then has the job's name (after :func:`rundir.set_aside`)."""
    import logging

    inside = os.path.realpath(job_dir) + os.sep
    loggers = [
        logging.getLogger(),
        *(x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger)),
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler) and os.path.realpath(handler.baseFilename).startswith(inside):
                if detach:
                    logger.removeHandler(handler)
                handler.close()


def note(sweep_dir: Path, num: Any, job_dir: Path, action: str, **extra: Any) -> None:
    """What job ``num`` of the resumed sweep did (one of :data:`ACTIONS`), for the sweep's last line."""
    from rnnlab.atomic import write_json

    if sweep_dir.is_dir():
        write_json(sweep_dir / NOTES / f"{num}.json", {"job_dir": str(job_dir), "action": action, **extra})


def start_job(cfg: Any, hydra_cfg: Any) -> JobStart:
    """The start of a job of a resumed sweep (see the module docstring): skip it, take its directory back to
    resume from its last.ckpt, set an attempt without a checkpoint aside, or claim a new directory. Raises
    DirectoryTaken (one line) for a directory of another job or of a live process."""
    job_dir = Path(str(hydra_cfg.runtime.output_dir)).absolute()
    sweep_dir = Path(str(hydra_cfg.sweep.dir)).absolute()
    num = hydra_cfg.job.get("num", "x")
    worker = rundir.launched_worker()
    if not rundir.run_files_in(job_dir, str(hydra_cfg.job.name)):  # the earlier attempt never started this job
        claim = rundir.claim_job_dir(hydra_cfg, True)
        if not worker:
            note(sweep_dir, num, job_dir, "started")
        return JobStart(claim)
    owner = rundir.read_owner(job_dir)
    check_same_job(job_dir, num, rundir.job_overrides(hydra_cfg), owner)
    from rnnlab.runtime.sweeps import read_summary

    summary = read_summary(job_dir)
    if summary.get("status") == "completed":
        close_log_files(job_dir, detach=True)  # nothing is written into the directory, not a line of the job's log
        if not worker:
            note(sweep_dir, num, job_dir, "skipped")
            print(f"rnnlab: {_shown(job_dir)}: completed before, skipped", flush=True)
        value = summary.get("optimized_value")
        return JobStart(None, skipped=True, value=float(value) if isinstance(value, int | float) else None)
    last = job_dir / "checkpoints" / "last.ckpt"
    if worker:  # rank 0 of the launch takes the directory; this process follows the same checkpoint
        if last.is_file():
            rundir.follow_resume(job_dir)
        return JobStart(None)
    if rundir.still_running(owner):
        raise rundir.DirectoryTaken(
            f"hydra.sweep.subdir={_shown(job_dir)} belongs to {rundir.describe_owner(owner)}; a run never writes "
            "into another run's directory: resume the sweep once that run has ended"
        )
    if last.is_file():
        claim = rundir.claim_job_dir(hydra_cfg, True, take_back=True)
        note(sweep_dir, num, job_dir, "resumed", checkpoint=str(last), status=summary.get("status", "killed"))
        return JobStart(claim)
    close_log_files(job_dir, detach=False)
    aside = rundir.set_aside(job_dir)  # no checkpoint: keep the attempt, start again from scratch
    claim = rundir.claim_job_dir(hydra_cfg, True)
    note(sweep_dir, num, job_dir, "restarted", set_aside=str(aside))
    return JobStart(claim)
