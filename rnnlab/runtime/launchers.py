"""One-line errors for sweeps through hydra-submitit-launcher (hydra/launcher=slurm_cpu, slurm_gpu, submitit_local),
where submitit would end the sweep with a traceback:

* no ``srun`` on PATH (a SLURM sweep started on a laptop, say): submitit's RuntimeError, before anything is
  submitted;
* a job that ended without a result (SLURM killed it: time limit, memory, node failure; or it crashed outright):
  submitit's ``UncompletedJobError``, whose message holds the job's whole log. The line names the job, its state
  and its log file. The other jobs of a SLURM array go on running and their directories fill in as usual.

A job that raises (a bad value, a divergence) is neither: Hydra keeps its error in the job's result and rnnlab.cli
reports it. Hydra's plugins must live in the ``hydra_plugins`` package, so rnnlab refines the plugin's launchers
here, in rnnlab.cli's error reporting, rather than with a launcher of its own. No submitit import: the exceptions
are recognised by their class's module and name.
"""

from __future__ import annotations

import re


def uncompleted_line(message: str) -> str:
    """submitit's UncompletedJobError message (the job's log included) in one line: job, state, log file. A
    FailedJobError (the job raised outside Hydra's run of it) carries a traceback: its last line says what."""
    if re.match(r"Job .*failed during processing", message):
        last = [line.strip() for line in message.strip().splitlines() if line.strip()][-1]
        return f"a job failed outside its run: {last}"
    job = re.search(r"^Job (\S+) \(task: (\S+)\) with path (\S+)", message, re.MULTILINE)
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", message)
    if job is None:
        return message.strip().splitlines()[0] if message.strip() else "a job ended without a result"
    job_id, task, result = job.groups()
    log = re.sub(r"_result\.pkl$", "_log.err", result)
    where = f"state {state.group(1)}" if state else "no result"
    return f"job {job_id} (task {task}) ended without a result ({where}); its log: {log}"


def submitit_error_line(ex: BaseException) -> str | None:
    """The one line for an error of submitit's (see the module docstring), or None for any other exception."""
    kind = type(ex)
    if kind.__module__ == "submitit.core.utils" and kind.__name__ in ("UncompletedJobError", "FailedJobError"):
        return uncompleted_line(str(ex))
    if isinstance(ex, RuntimeError) and 'Could not detect "srun"' in str(ex):
        return (
            "hydra/launcher: a SLURM launcher (slurm_cpu, slurm_gpu, submitit_slurm) needs srun, and srun is not on "
            "PATH; start SLURM sweeps on a machine of the cluster (hydra/launcher=submitit_local runs them here)"
        )
    return None
