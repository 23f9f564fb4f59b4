"""Failed jobs of a sweep (``rnnlab-train -m``): each one recorded in its job's summary.json, all listed at the end.

Hydra runs every job of a batch even when one of them raises (``run_job`` keeps the exception in the job's
``JobReturn``); when the batch is done the sweeper raises the first failure and prints only its overrides. The
Optuna sweeper goes on to its next batch only while the failure rate stays below ``max_failure_rate``.
:class:`FailedJobs`, a Hydra callback (``hydra.callbacks`` in conf/hydra/default.yaml), fills the gaps:

* ``on_multirun_start`` (the main process) remembers the sweep directory and when the sweep started;
* ``on_job_end`` (wherever the job runs: the main process, a joblib worker, a submitit job) records a failed job in
  its own ``summary.json`` as ``"status": "failed"`` with its one-line ``error``, unless train() already has (a
  divergence does, with the details), so that rnnlab-report lists it;
* when the sweep is over, whether the sweeper raised or returned, rnnlab.cli calls :func:`finish_sweep`, which
  prints every failed job of this sweep (its directory and its one line) and makes the exit status 1. After a
  signal it also prints the command that resumes the sweep (``resume_sweep=``, rnnlab.runtime.sweep_resume); a
  resumed sweep first says how many jobs it skipped, resumed and started afresh.

Job directories are read from disk because a job's ``on_job_end`` may run in another process. Only jobs written
since the sweep started count, so a reused ``hydra.sweep.dir`` does not list an earlier sweep's failures (a resumed
sweep's skipped jobs count too: their notes are new). An earlier attempt set aside (``<job dir>.partial-N``) is no
job of the sweep. This module stays light (no torch): Hydra instantiates the callback before every run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


@dataclass
class FailedJob:
    job_dir: Path
    error: str


@dataclass
class _Sweep:
    directory: Path
    started: float  # time.time() at on_multirun_start
    resumed: bool = False  # resume_sweep=...
    resumable: bool = True  # not an Optuna search


@dataclass
class SweepEnd:
    """What :func:`finish_sweep` found: the number of jobs, the failed ones, a resumed sweep's line (how many jobs
    were skipped, resumed, started afresh), and the sweep's directory when ``resume_sweep`` can resume it (not an
    Optuna search)."""

    total: int = 0
    failed: list[FailedJob] = field(default_factory=list)
    resumed: str | None = None
    resumable: Path | None = None


_ACTIVE: _Sweep | None = None  # the sweep running in this process, set by FailedJobs.on_multirun_start


class FailedJobs(Callback):
    """Records failed jobs in their summary.json and remembers the sweep so :func:`finish_sweep` can list them."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        global _ACTIVE
        from rnnlab.runtime.rundir import is_optuna

        resumed = getattr(config, "resume_sweep", None) is not None
        _ACTIVE = _Sweep(Path(str(config.hydra.sweep.dir)).absolute(), time.time() - 1.0,  # 1 s: coarse mtimes
                         resumed, not is_optuna(config))  # fmt: skip

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        from rnnlab.runtime.rundir import DirectoryTaken, read_owner

        if job_return.status != JobStatus.FAILED:
            return
        output_dir = config.hydra.runtime.output_dir
        if not output_dir:
            return
        job_dir, error = Path(str(output_dir)), job_return._return_value
        if isinstance(error, DirectoryTaken) or read_owner(job_dir).get("pid") != os.getpid():
            # the job's directory is another run's: the failure goes into the sweep's own directory instead
            sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
            record_refusal(sweep_dir, str(config.hydra.job.get("num", "x")), job_dir, error)
        else:
            record_failure(job_dir, error)


def error_line(ex: BaseException) -> str:
    """The job's error in one line: rnnlab's own line for a user error, else ``Type: first line``."""
    from rnnlab.errorlines import one_line_error

    line = one_line_error(ex)
    if line is None:
        first = str(ex).strip().splitlines()[0] if str(ex).strip() else ""
        line = f"{type(ex).__name__}: {first}" if first else type(ex).__name__
    return line


def read_summary(job_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((job_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_failure(job_dir: Path, ex: BaseException) -> None:
    """Mark the job's summary.json failed with the exception's one line (keeping what train() wrote, if it did)."""
    from rnnlab.atomic import write_json

    summary = read_summary(job_dir)
    if summary.get("status") == "failed" and summary.get("error"):
        return
    summary.update(status="failed", error=error_line(ex))
    summary.setdefault("finished_at", datetime.now().astimezone().isoformat(timespec="seconds"))
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json(job_dir / "summary.json", summary)


REFUSED_DIR = ".rnnlab-refused"  # in a sweep's directory: jobs whose directory belonged to another run


def record_refusal(sweep_dir: Path, job_num: str, job_dir: Path, ex: BaseException) -> None:
    """A job that could not claim its directory writes nothing there; its failure is kept in the sweep's own
    directory (``.rnnlab-refused/<job number>.json``), for the list at the end of the sweep."""
    from rnnlab.atomic import write_json

    if not sweep_dir.is_dir():
        return
    write_json(sweep_dir / REFUSED_DIR / f"{job_num}.json", {"job_dir": str(job_dir), "error": error_line(ex)})


def _job_number(path: Path) -> tuple[int, str]:
    head = path.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, path.name)


def sweep_jobs(directory: Path, since: float = 0.0) -> tuple[list[Path], list[FailedJob]]:
    """The job directories under ``directory`` whose record was written after ``since`` (sorted by job number), and
    the jobs that did not complete among them: summary.json says failed or interrupted, or there is none (the job
    never finished); plus the jobs refused their directory (:func:`record_refusal`)."""
    from rnnlab.runtime.rundir import is_set_aside

    jobs: list[Path] = []
    if directory.is_dir():
        for path in directory.iterdir():
            if is_set_aside(path.name):  # an earlier attempt, kept beside the job that replaced it
                continue
            # Hydra's record of the job (unless hydra.output_subdir=null), else what train() writes
            records = [path / ".hydra" / "overrides.yaml", path / "config_resolved.yaml", path / "summary.json"]
            record = next((r for r in records if r.is_file()), None)
            if path.is_dir() and record is not None and record.stat().st_mtime >= since:
                jobs.append(path)
    jobs.sort(key=_job_number)
    failed = []
    for job in jobs:
        summary = read_summary(job)
        if not summary:
            failed.append(FailedJob(job, "no summary.json: the job did not finish"))
        elif summary.get("status") in ("failed", "interrupted"):
            failed.append(FailedJob(job, str(summary.get("error") or summary["status"]).splitlines()[0]))
    refused = directory / REFUSED_DIR
    if refused.is_dir():
        for record in sorted(refused.glob("*.json"), key=lambda p: _job_number(Path(p.stem + "_"))):
            try:
                data = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            if record.stat().st_mtime >= since:
                failed.append(FailedJob(Path(str(data.get("job_dir", record.stem))), str(data.get("error", ""))))
                jobs.append(Path(str(data.get("job_dir", record.stem))))
    return jobs, failed


def finish_sweep() -> SweepEnd:
    """End of the sweep started in this process (its jobs, the failed ones; a resumed sweep's counts); forgets the
    sweep. An empty SweepEnd when no sweep ran."""
    global _ACTIVE
    sweep, _ACTIVE = _ACTIVE, None
    if sweep is None:
        return SweepEnd()
    jobs, failed = sweep_jobs(sweep.directory, sweep.started)
    end = SweepEnd(len(jobs), failed)
    if sweep.resumed:
        notes = read_notes(sweep.directory, sweep.started)
        seen = {os.path.realpath(job) for job in jobs}
        end.total += sum(1 for n in notes.values() if os.path.realpath(str(n["job_dir"])) not in seen)
        end.resumed = summary_line(sweep.directory, notes)
    if sweep.resumable:
        end.resumable = sweep.directory
    return end


def resume_command(sweep_dir: Path, argv: list[str]) -> str:
    """The sweep's own command (``argv``, as rnnlab-train was given it) plus ``resume_sweep=<its directory>``."""
    import shlex

    from rnnlab.runtime.rundir import without_resume

    args = without_resume(argv)
    return shlex.join(["rnnlab-train", *args, f"resume_sweep={_shown(sweep_dir)}"])


def format_failures(total: int, failed: list[FailedJob], interrupted: bool = False) -> str:
    """``rnnlab: error: 1 of 3 jobs failed:`` and one line per failed job: its directory, then its error. After a
    signal: ``rnnlab: the sweep was interrupted after 2 jobs; not completed:``."""
    if interrupted:
        lines = [f"rnnlab: the sweep was interrupted after {total} job{'s' if total != 1 else ''} began; "
                 "the jobs not begun did not run; not completed:"]  # fmt: skip
    else:
        lines = [f"rnnlab: error: {len(failed)} of {total} jobs failed:"]
    lines += [f"  {_shown(job.job_dir)}: {job.error}" for job in failed]
    return "\n".join(lines) + "\n"


def _shown(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


# ------------------------------------------------------------------------------------- resumed sweeps
NOTES = ".rnnlab-resume"  # in a resumed sweep's directory: what each job did, <job number>.json
ACTIONS = ("skipped", "resumed", "restarted", "started")


def read_notes(sweep_dir: Path, since: float) -> dict[str, dict[str, Any]]:
    """The notes the jobs of the resumed sweep (started after ``since``) left: {job number: note}."""
    import json

    notes: dict[str, dict[str, Any]] = {}
    folder = sweep_dir / NOTES
    if not folder.is_dir():
        return notes
    for path in folder.glob("*.json"):
        try:
            if path.stat().st_mtime < since:
                continue
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("action") in ACTIONS:
            notes[path.stem] = data
    return notes


def summary_line(sweep_dir: Path, notes: dict[str, dict[str, Any]]) -> str:
    """``rnnlab: resumed sweep <dir>: 1 job skipped (completed before), 1 resumed from its last.ckpt, 2 started
    afresh (1 again from scratch, ...)``."""
    count = {action: sum(1 for n in notes.values() if n["action"] == action) for action in ACTIONS}
    fresh = count["started"] + count["restarted"]
    parts = [
        f"{count['skipped']} job{'s' if count['skipped'] != 1 else ''} skipped (completed before)",
        f"{count['resumed']} resumed from {'its' if count['resumed'] == 1 else 'their'} last.ckpt",
        f"{fresh} started afresh",
    ]
    if count["restarted"]:
        parts[-1] += (f" ({count['restarted']} of them again from scratch, without a checkpoint; the earlier "
                      "attempt kept as <job dir>.partial-N)")  # fmt: skip
    return f"rnnlab: resumed sweep {_shown(sweep_dir)}: " + ", ".join(parts)
