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
  prints every failed job of this sweep (its directory and its one line) and makes the exit status 1.

Job directories are read from disk because a job's ``on_job_end`` may run in another process. Only jobs written
since the sweep started count, so a reused ``hydra.sweep.dir`` does not list an earlier sweep's failures. This
module stays light (no torch): Hydra instantiates the callback before every run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
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


_ACTIVE: _Sweep | None = None  # the sweep running in this process, set by FailedJobs.on_multirun_start


class FailedJobs(Callback):
    """Records failed jobs in their summary.json and remembers the sweep so :func:`finish_sweep` can list them."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        global _ACTIVE
        _ACTIVE = _Sweep(Path(str(config.hydra.sweep.dir)).absolute(), time.time() - 1.0)  # 1 s: coarse mtimes

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
    jobs: list[Path] = []
    if directory.is_dir():
        for path in directory.iterdir():
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


def finish_sweep() -> tuple[int, list[FailedJob]]:
    """End of the sweep started in this process: (number of jobs, failed jobs); forgets the sweep. (0, []) when
    no sweep ran."""
    global _ACTIVE
    sweep, _ACTIVE = _ACTIVE, None
    if sweep is None:
        return 0, []
    jobs, failed = sweep_jobs(sweep.directory, sweep.started)
    return len(jobs), failed


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
