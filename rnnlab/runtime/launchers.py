"""One-line errors for sweeps through hydra-submitit-launcher (hydra/launcher=slurm_cpu, slurm_gpu, submitit_local),
where submitit would end the sweep with a traceback:

* no ``srun`` on PATH (a SLURM sweep started on a laptop, say): submitit's RuntimeError, before anything is
  submitted;
* a job that ended without a result (SLURM killed it: time limit, memory, node failure; or it crashed outright):
  submitit's ``UncompletedJobError``, whose message holds the job's whole log. The line names the job, its state
  and its log file. The other jobs of a SLURM array go on running and their directories fill in as usual.

And one gap filled: submitit learns a SLURM job's state from ``sacct``, which needs SLURM's accounting database. On a
cluster without one (``sacct`` answers "Slurm accounting storage is disabled"; small clusters and
scripts/slurm/cluster.sh's), every poll printed a warning and a job that SLURM cancelled or killed was never seen
to end: the sweep waited forever. :class:`SlurmStates` (a Hydra callback) gives submitit's SLURM jobs a watcher
that asks ``squeue --states=all`` instead when accounting is off (slurmctld keeps a finished job for
``MinJobAge``, 5 minutes by default; the result files of jobs that ended normally do not need it).

A job that raises (a bad value, a divergence) is neither: Hydra keeps its error in the job's result and rnnlab.cli
reports it. Hydra's plugins must live in the ``hydra_plugins`` package, so rnnlab refines the plugin's launchers
here, in rnnlab.cli's error reporting, rather than with a launcher of its own. No submitit import: the exceptions
are recognised by their class's module and name.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

from hydra.experimental.callback import Callback

ACCOUNTING_OFF = "accounting storage is disabled"


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


# ------------------------------------------------------------------------------ job states without accounting
def accounting_enabled() -> bool:
    """Whether ``sacct`` can answer on this cluster (False when it says accounting storage is disabled)."""
    try:
        done = subprocess.run(["sacct", "-n", "-X", "-o", "JobID", "-j", "1"], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return True  # no verdict: leave submitit's own behaviour
    return not (done.returncode != 0 and ACCOUNTING_OFF in (done.stdout + done.stderr).lower())


def squeue_command(sacct_command: list[str]) -> list[str]:
    """submitit's ``sacct -o JobID,State,NodeList --parsable2 -j A -j B`` as the squeue call that answers the same
    from slurmctld's memory: every state (finished jobs too, for ``MinJobAge``), the same three fields."""
    ids = [sacct_command[i + 1] for i, part in enumerate(sacct_command[:-1]) if part == "-j"]
    return ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", f"--jobs={','.join(ids)}"]


def squeue_watcher(base: type) -> type:
    """A subclass of submitit's SlurmInfoWatcher that asks squeue when sacct cannot answer (no accounting)."""

    class SqueueFallbackWatcher(base):  # type: ignore[misc, valid-type]
        accounting: bool | None = None  # decided at the first poll

        def _make_command(self) -> list[str] | None:
            command = super()._make_command()
            if command is None:
                return None
            if self.accounting is None:
                self.accounting = accounting_enabled()
            return command if self.accounting else squeue_command(command)

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            if self.accounting is False:  # squeue's lines have sacct's fields, without its header
                text = string.decode() if isinstance(string, bytes) else string
                string = "JobID|State|NodeList\n" + text
            return super().read_info(string)

    return SqueueFallbackWatcher


def use_squeue_fallback() -> None:
    """Give submitit's SLURM jobs the watcher of :func:`squeue_watcher` (once per process)."""
    from submitit.slurm import slurm

    if getattr(slurm.SlurmJob.watcher, "accounting", "absent") == "absent":
        slurm.SlurmJob.watcher = squeue_watcher(slurm.SlurmInfoWatcher)(delay_s=600)


class SlurmStates(Callback):
    """``hydra.callbacks.slurm_states`` (conf/hydra/default.yaml): before a sweep through a submitit SLURM launcher
    starts, give submitit the watcher that reads job states from squeue on a cluster without accounting."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        target = str(config.hydra.launcher.get("_target_", ""))
        if "submitit" in target and "Slurm" in target:
            use_squeue_fallback()
