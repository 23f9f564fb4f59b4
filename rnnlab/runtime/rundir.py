"""A run never writes into another run's directory: every run and every sweep claims its directory first.

The claim is a file, ``.rnnlab-owner.json``, created with ``O_CREAT | O_EXCL`` before the run writes anything
else. Exactly one process can create it, however the directory's path was set (``hydra.run.dir``,
``hydra.sweep.dir``, ``hydra.sweep.subdir``, ``paths.run_dir``) and however many processes start at the same
instant; every other claimant gets one line and exit status 1. The file records the owner (kind, pid, host, the
SLURM job when there is one, the command) and, when the run ends, its status. It stays in the directory: a
finished run keeps its directory.

Where the claims are taken:

* a sweep claims ``hydra.sweep.dir`` in :meth:`RunDirGuard.on_multirun_start`, before Hydra writes
  ``multirun.yaml``;
* a run, or a job of a sweep, claims ``hydra.runtime.output_dir`` at the start of its task function
  (:func:`claim_job_dir`, called by rnnlab.cli), before anything is written into it. For that, Hydra's own
  ``.hydra/`` copy of the config is switched off (``hydra.output_subdir: null`` in conf/hydra/default.yaml) and
  written by :func:`write_hydra_record` once the directory is claimed, and the job's log file is opened on its
  first message (``delay: true``, conf/hydra/job_logging/rnnlab.yaml);
* ``train(cfg)`` claims ``paths.run_dir`` unless this process holds it already (a run started from Python, or
  ``paths.run_dir`` set to another directory), and checks that every directory it will write to (checkpoints,
  loggers, ``trainer.default_root_dir``) lies inside a directory this process owns (:func:`check_inside`).

A run that ends before its first training step (a bad value, a missing file, a signal while the data loads)
releases its claim and removes what it wrote (:func:`Claim.release`): the directory can be used again, and one
that did not exist before is removed. A job of a sweep keeps its directory and its failed summary.json, so that
the sweep's list of failures and rnnlab-report find it.

A run may continue in a directory it claimed before, and then resumes from that directory's
``checkpoints/last.ckpt`` (:attr:`Claim.taken_back`, rnnlab.train):

* a SLURM job that SLURM (or submitit) requeued runs again into the directory it claimed: it takes back its own
  claim when the claim names the same SLURM job (array job and task) and the claiming process is gone;
* a job of a resumed sweep (``resume_sweep=<sweep dir>``, rnnlab.runtime.sweep_resume) takes over the claim of
  the job directory its earlier attempt left unfinished (interrupted, failed, killed) once that attempt's owner is
  not running any more (:func:`still_running`); the sweep takes over the sweep directory's claim the same way.

An earlier attempt without a checkpoint to resume from is set aside whole (:func:`set_aside`: renamed
``<directory>.partial-N``), and the run starts again from scratch in a new directory of the same name.

Processes of one DDP launch other than rank 0 claim nothing: rank 0 of the launch owns the run's directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnlab.atomic import create_exclusive, write_text
from rnnlab.errors import ConfigError

OWNER_FILE = ".rnnlab-owner.json"


class DirectoryTaken(ConfigError):
    """A run's (or a sweep job's) directory belongs to another run: the job writes nothing, not even its failure
    (rnnlab.runtime.sweeps records it in the sweep's directory instead)."""


# what a run writes into its directory (besides the job log, <hydra.job.name>.log); a directory holding any of
# these without an owner file is a run from before claims existed, and is refused all the same
RUN_FILES = (".hydra", "config_resolved.yaml", "summary.json", "checkpoints", "tensorboard", "csv", "figures")
SWEEP_FILES = ("multirun.yaml", "optimization_results.yaml", "optuna_worker.json", "optuna_trials.json")


# ------------------------------------------------------------------------------------------------- owners
def slurm_job() -> str | None:
    """The SLURM job this process belongs to (``<array job>_<task>`` for an array task), or None outside SLURM.
    A requeued job keeps it."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def owner_record(kind: str, sweep: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """What the owner file holds for this process (``overrides``: a sweep job's own overrides, which say which job
    of the sweep the directory holds)."""
    return {
        "kind": kind,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job": slurm_job(),
        "started": _now(),
        "status": "running",
        "argv": list(sys.argv),
        **({"sweep": str(sweep)} if sweep is not None else {}),
        **({"overrides": list(overrides)} if overrides is not None else {}),
    }


def read_owner(path: Path) -> dict[str, Any]:
    """The owner file of directory ``path`` ({} when it is missing or unreadable). A file still empty (created by
    the O_EXCL fallback of :func:`rnnlab.atomic.create_exclusive`, its content not yet written) is read again
    for up to 1 s."""
    import time

    for _ in range(20):
        try:
            text = (path / OWNER_FILE).read_text()
        except OSError:
            return {}
        if text.strip():
            break
        time.sleep(0.05)
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# sacct's states of a SLURM job that has ended (a requeued job is PENDING or REQUEUED again)
SLURM_ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
               "PREEMPTED", "TIMEOUT")  # fmt: skip


def slurm_state(job: Any) -> str | None:
    """The state SLURM gives SLURM job ``job`` (``TIMEOUT``, ``RUNNING``, ...): from its accounting (``sacct``), or,
    on a cluster without accounting, from slurmctld's memory of recent jobs (``squeue --states=all``, as
    rnnlab.runtime.launchers does for submitit); None when there is no job, neither command answers, or no answer
    comes within 10 s."""
    if not job:
        return None
    for command in (["sacct", "-n", "-X", "-P", "-o", "State", "-j", str(job)],
                    ["squeue", "--noheader", "--states=all", "--format=%T", f"--jobs={job}"]):  # fmt: skip
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        lines = [line.split()[0] for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []
        if lines:
            return lines[0]
    return None


def _host_state(owner: dict[str, Any]) -> str:
    """How far the process of a "running" owner record can be seen: "alive", "gone" (on this host, or its SLURM job
    ended, as sacct says) or "elsewhere" (another host, nothing known)."""
    pid, host = owner.get("pid"), owner.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        return "alive" if _alive(pid) else "gone"
    state = slurm_state(owner.get("slurm_job"))
    return "gone" if state in SLURM_ENDED else "elsewhere"


def still_running(owner: dict[str, Any]) -> bool:
    """Whether the run of an owner record is going on: its status says running, and its process is alive (on
    another host, where that cannot be checked, it is taken to be, unless SLURM's accounting says that the SLURM
    job it ran in has ended)."""
    if not owner or str(owner.get("status", "running")) != "running":
        return False
    return _host_state(owner) != "gone"


def describe_owner(owner: dict[str, Any]) -> str:
    """'a run (pid 123 on host, started ..., completed)' for a refusal line."""
    if not owner:
        return "another run (its owner file is unreadable)"
    kind, pid, host = owner.get("kind", "run"), owner.get("pid"), owner.get("host", "?")
    status = str(owner.get("status", "running"))
    if status == "running":
        seen = _host_state(owner)
        if seen == "gone":
            status = "its process is gone: it was killed or crashed"
        else:
            status = "still running" if seen == "alive" else "running, or killed, on another host"
    job = f", SLURM job {owner['slurm_job']}" if owner.get("slurm_job") else ""
    return f"a {kind} (pid {pid} on {host}{job}, started {owner.get('started', '?')}; {status})"


def _has_ended(owner: dict[str, Any], kind: str) -> bool:
    """A claim of ``kind`` whose owner has ended (completed, failed, interrupted, or killed: its process is gone)."""
    return bool(owner) and owner.get("kind") == kind and not still_running(owner)


def _can_take_back(owner: dict[str, Any]) -> bool:
    """A requeued SLURM job's own claim: the same job, and the process that claimed it is gone."""
    mine = slurm_job()
    if mine is None or owner.get("slurm_job") != mine or owner.get("kind") != "run":
        return False
    pid, host = owner.get("pid"), owner.get("host")
    if pid == os.getpid() and host == socket.gethostname():
        return False
    return not (host == socket.gethostname() and isinstance(pid, int) and _alive(pid))


# ------------------------------------------------------------------------------------------------- claims
@dataclass
class Claim:
    """This process's ownership of one directory."""

    path: Path
    kind: str  # "run" or "sweep"
    existed: bool  # the directory existed before this run (it is never removed then)
    before: frozenset[str]  # its entries before the claim (an existing directory may hold unrelated files)
    record: dict[str, Any] = field(default_factory=dict)
    taken_back: bool = False  # a requeued SLURM job took back its own claim
    trained: bool = False  # a training step was taken: the directory now holds results

    def holds_results(self) -> bool:
        """The run took a training step, or its directory holds a checkpoint."""
        if self.trained:
            return True
        ckpts = self.path / "checkpoints"
        return ckpts.is_dir() and any(ckpts.glob("*.ckpt"))

    def finish(self, status: str, **extra: Any) -> None:
        """The run has ended (completed, failed, interrupted): record it in the owner file and let go of the claim
        in this process. The directory stays the run's: the owner file stays."""
        from rnnlab.atomic import write_json

        _HELD.pop(self.path, None)
        self.record.update(status=status, ended=_now(), **extra)
        with contextlib.suppress(OSError):  # a full disk must not hide the run's own error
            write_json(self.path / OWNER_FILE, self.record)

    def release(self) -> None:
        """Give the directory back after a run that never trained: remove what the run wrote (everything that was
        not there before the claim), the owner file last, and the directory itself if the run created it."""
        import shutil

        _HELD.pop(self.path, None)
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name in self.before or entry.name == OWNER_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        (self.path / OWNER_FILE).unlink(missing_ok=True)
        if not self.existed:
            with contextlib.suppress(OSError):  # something else appeared there: leave it
                self.path.rmdir()


_HELD: dict[Path, Claim] = {}  # the claims of the runs (and the sweep) active in this process
_EXISTED: set[Path] = set()  # run directories RunDirGuard.on_run_start saw before Hydra created them
_FOLLOWING: set[Path] = set()  # run directories whose rank 0 resumes there (this process is another rank)


def _key(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def held(path: str | os.PathLike[str]) -> Claim | None:
    """This process's claim on ``path``, if it holds one."""
    return _HELD.get(_key(path))


def owned_root(path: str | os.PathLike[str], kind: str = "run") -> Claim | None:
    """The active ``kind`` claim of this process that ``path`` lies inside (or is), or None."""
    target = _key(path)
    for root, found in _HELD.items():
        if found.kind == kind and (target == root or root in target.parents):
            return found
    return None


def check_new_dir(path: Path, key: str, held_names: list[str]) -> None:
    """Raise ConfigError (one line) unless ``path`` can become a new run's (or sweep's) directory. Creates nothing."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file, not a directory")
    if held_names:
        shown = ", ".join(held_names[:4]) + (", ..." if len(held_names) > 4 else "")
        raise ConfigError(
            f"{key}={path} already holds a run ({shown}); a run never writes into another run's directory: "
            f"choose a new {key}, or leave it unset for a fresh one"
        )
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}: cannot create {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot create {path}: {parent} is not writable")


def run_files_in(path: Path, job_name: str | None = None) -> list[str]:
    """The names in ``path`` that belong to a run (sorted; empty for a new, empty or unrelated directory)."""
    if not path.is_dir():
        return []
    names = {*RUN_FILES, OWNER_FILE} | ({f"{job_name}.log"} if job_name else set())
    return sorted(p.name for p in path.iterdir() if p.name in names)


def sweep_files_in(path: Path) -> list[str]:
    """The names in ``path`` that belong to a sweep: its multirun.yaml, Optuna's results, or job directories."""
    if not path.is_dir():
        return []
    return sorted(
        p.name
        for p in path.iterdir()
        if p.name in (*SWEEP_FILES, OWNER_FILE) or (p / ".hydra").is_dir() or (p / OWNER_FILE).is_file()
    )


def claim(
    path: str | os.PathLike[str],
    kind: str,
    key: str,
    *,
    sweep: Path | None = None,
    take_back: bool = False,
    overrides: list[str] | None = None,
) -> Claim:
    """Claim directory ``path`` for this process (``kind`` run or sweep; ``key`` names the setting in errors).

    Creates the directory if needed, then the owner file, atomically. Raises ConfigError (one line) when another
    run or sweep owns it, when it holds a run from before claims existed, or when it cannot be created.
    ``take_back``: the directory's earlier owner of the same kind may be taken over once it has ended (a resumed
    sweep); a requeued SLURM job always takes back its own. A claim taken back is :attr:`Claim.taken_back`.
    ``sweep`` and ``overrides`` go into the owner record (a sweep job's sweep and its own overrides)."""
    target = _key(path)
    shown = Path(path).expanduser()
    check_new_dir(target, key, [])
    existed = target.is_dir() and (target in _EXISTED or any(target.iterdir()))
    target.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in target.iterdir()}
    if OWNER_FILE not in names:  # a run or sweep from before claims existed (names: one listing, before the claim)
        legacy = sorted(n for n in names if n in RUN_FILES or n in SWEEP_FILES or (target / n / ".hydra").is_dir())
        if legacy:
            check_new_dir(shown, key, legacy)
    record = owner_record(kind, sweep, overrides)
    try:
        created = create_exclusive(target / OWNER_FILE, json.dumps(record, indent=2) + "\n")
    except OSError as err:
        raise ConfigError(f"{key}: cannot write in {shown}: {err.strerror or err}") from err
    if not created:
        owner = read_owner(target)
        if not (_can_take_back(owner) or (take_back and _has_ended(owner, kind))):
            raise ConfigError(
                f"{key}={shown} belongs to {describe_owner(owner)}; a run never writes into another run's "
                f"directory: choose a new {key}, or leave it unset for a fresh one"
            )
        from rnnlab.atomic import write_json

        record["taken_back_from"] = {k: owner.get(k) for k in ("pid", "host", "started", "status")}
        write_json(target / OWNER_FILE, record)
        result = Claim(target, kind, True, frozenset(names), record, taken_back=True, trained=True)
        _HELD[target] = result
        return result
    result = Claim(target, kind, existed, frozenset(names - {OWNER_FILE}), record)
    _HELD[target] = result
    return result


def is_set_aside(name: str) -> bool:
    """``name`` is that of an attempt :func:`set_aside` kept (``<name>.partial-N``)."""
    head, sep, n = name.rpartition(".partial-")
    return bool(head and sep and n.isdigit())


def set_aside(path: str | os.PathLike[str]) -> Path:
    """Keep a stopped attempt's directory (or file) out of the way of the next attempt: rename it
    ``<name>.partial-N``, the first N free (1, 2, ...). Returns the new path. Nothing is copied or deleted."""
    path = Path(path)
    n = 1
    while True:
        aside = path.with_name(f"{path.name}.partial-{n}")
        if not aside.exists() and not aside.is_symlink():
            try:
                path.rename(aside)
            except FileExistsError:  # taken meanwhile: the next number
                pass
            except OSError as err:
                if not aside.exists():
                    raise ConfigError(f"cannot set {path} aside as {aside.name}: {err.strerror or err}") from err
            else:
                return aside
        n += 1


def follow_resume(path: str | os.PathLike[str]) -> None:
    """In a DDP process other than rank 0 (it claims nothing): rank 0 of the launch takes the run directory
    ``path`` back and resumes there, and so does this process (:func:`resumes_in_place`)."""
    _FOLLOWING.add(_key(path))


def resumes_in_place(run_dir: str | os.PathLike[str], claim: Claim | None) -> Path | None:
    """The run's own ``checkpoints/last.ckpt`` when the run continues in its own directory: its claim was taken back
    (a requeued SLURM job, a job of a resumed sweep), or, in a DDP process other than rank 0, rank 0 does
    (:func:`follow_resume`). None otherwise, or when there is no last.ckpt."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    taken_back = claim.taken_back if claim is not None else _key(run_dir) in _FOLLOWING
    return last if taken_back and last.is_file() else None


def forget_claims() -> None:
    """Drop this process's record of its claims (the files stay). For tests and for processes that fork."""
    _HELD.clear()
    _EXISTED.clear()
    _FOLLOWING.clear()


def check_inside(path: str | os.PathLike[str] | None, key: str) -> None:
    """``path`` (a directory the run will write to) lies inside a directory this process owns; one line if not."""
    if path is None or str(path) == "":
        return
    if owned_root(path) is None:
        roots = ", ".join(str(p) for p, c in _HELD.items() if c.kind == "run") or "none"
        raise ConfigError(
            f"{key}={path} is outside this run's directory ({roots}); a run writes only inside the directory it "
            f"owns: leave {key} at its default, or point it below the run directory"
        )


# ------------------------------------------------------------------------------------- Hydra integration
def launched_worker() -> bool:
    """A process started by a DDP launcher (Lightning's subprocess launcher, torchrun, srun) other than the one
    that owns the run: rank 0 of the launch claims the directory that all its processes share
    (rnnlab.runtime.distributed.run_stamp), and Lightning's launcher passes it to the processes it starts."""
    from rnnlab.runtime.distributed import launch_rank

    if "LOCAL_RANK" in os.environ and os.environ.get("LOCAL_RANK") != "0":
        return True
    return launch_rank() != 0


def without_resume(overrides: Any) -> list[str]:
    """``overrides`` without ``resume_sweep=...``, which says where a sweep runs, not which job or sweep it is."""
    return [str(o) for o in overrides if not str(o).lstrip("+~").startswith("resume_sweep=")]


def job_overrides(hydra_cfg: DictConfig) -> list[str]:
    """A sweep job's own overrides (``hydra.overrides.task``) without ``resume_sweep``."""
    return without_resume(hydra_cfg.overrides.task)


def claim_job_dir(hydra_cfg: DictConfig, multirun: bool, *, take_back: bool = False) -> Claim | None:
    """At the start of a run's (or a sweep job's) task function: claim ``hydra.runtime.output_dir`` (the caller
    then writes Hydra's record of the run, ``.hydra/``, into it). None in a process that is not the run's owner
    (DDP). ``take_back``: a job of a resumed sweep may take over its unfinished earlier attempt's claim."""
    if launched_worker():
        return None
    output_dir = Path(str(hydra_cfg.runtime.output_dir))
    key = "hydra.sweep.subdir" if multirun else "hydra.run.dir"
    sweep = Path(str(hydra_cfg.sweep.dir)).absolute() if multirun else None
    overrides = job_overrides(hydra_cfg) if multirun else None
    return claim(output_dir, "run", key, sweep=sweep, take_back=take_back, overrides=overrides)


def write_hydra_record(task_cfg: DictConfig, hydra_root: DictConfig, output_dir: Path, subdir: str | None) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra itself writes them."""
    if not subdir:
        return
    target = output_dir / subdir
    target.mkdir(parents=True, exist_ok=True)
    for name, node in (
        ("config.yaml", task_cfg),
        ("hydra.yaml", hydra_root),
        ("overrides.yaml", hydra_root.hydra.overrides.task),
    ):
        write_text(target / name, OmegaConf.to_yaml(node))


def _resolved(config: DictConfig, key: str) -> str | None:
    try:
        value = OmegaConf.select(config, key, throw_on_resolution_failure=True)
    except Exception:  # an interpolation Hydra resolves only later (${hydra:...}): leave the check to Hydra
        return None
    return None if value is None else str(value)


def _refuse(err: ConfigError) -> None:
    # Hydra turns a callback's exceptions into warnings and goes on: the refusal has to end the process here
    sys.stderr.write(f"rnnlab: error: {str(err).splitlines()[0]}\n")
    sys.exit(1)


class RunDirGuard(Callback):
    """Claims ``hydra.sweep.dir`` for a sweep; checks ``hydra.run.dir`` before Hydra creates it (the run claims it
    in its task function, :func:`claim_job_dir`). ``record_subdir``: where the run writes Hydra's record of
    itself (``.hydra``), since Hydra's own ``hydra.output_subdir`` is switched off; null writes none."""

    def __init__(self, record_subdir: str | None = ".hydra") -> None:
        self.record_subdir = record_subdir

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume_sweep") is not None:
            _refuse(ConfigError(NOT_A_SWEEP))
        run_dir = _resolved(config, "hydra.run.dir")
        if run_dir is None or launched_worker():
            return
        path = Path(run_dir).expanduser().absolute()
        try:
            check_new_dir(path, "hydra.run.dir", run_files_in(path, _resolved(config, "hydra.job.name")))
        except ConfigError as err:
            _refuse(err)
        if path.is_dir():
            _EXISTED.add(_key(path))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = _resolved(config, "hydra.sweep.dir")
        if launched_worker():
            return
        resuming = config.get("resume_sweep") is not None
        try:
            if resuming:  # before anything is created: the sweep to resume exists, and can be resumed
                sweep_dir = str(check_resumable(config, sweep_dir))
            if sweep_dir is None:
                return
            found = claim(sweep_dir, "sweep", "resume_sweep" if resuming else "hydra.sweep.dir", take_back=resuming)
            if resuming:
                start_resumed_sweep(found)
        except ConfigError as err:
            _refuse(err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = _resolved(config, "hydra.sweep.dir")
        found = held(sweep_dir) if sweep_dir is not None else None
        if found is not None:
            found.finish("ended")


# ------------------------------------------------------------------------------------- resumed sweeps
# (rnnlab.runtime.sweep_resume: the sweep-level checks live here, where RunDirGuard claims the sweep directory)
NOT_A_SWEEP = (
    "resume_sweep: resumes a sweep, and this command starts a single run; run the sweep's own command, with -m, "
    "plus resume_sweep=<the sweep's directory>"
)
OPTUNA = (
    "resume_sweep: an Optuna search is not resumed job by job; it continues through its study's storage: run it "
    "with hydra.sweeper.storage=<database URL> hydra.sweeper.study_name=<name>, and the same command again "
    "continues the study"
)


def _resume_shown(path: Path) -> str:
    from rnnlab.runtime.resume import shown

    return shown(path)


# ------------------------------------------------------------------------------------- the sweep, at its start
def is_optuna(config: Any) -> bool:
    """The sweep is an Optuna search (``hparams_search=...``, ``hydra/sweeper=optuna``)."""
    sweeper = getattr(getattr(config, "hydra", None), "sweeper", None)
    return "optuna" in str(getattr(sweeper, "_target_", "") or "").lower()


def check_resumable(config: Any, sweep_dir: str | None) -> Path:
    """Before the resumed sweep creates or claims anything: ``resume_sweep`` names the directory of an rnnlab sweep
    that is not running any more, and the sweep is one that can be resumed job by job. Its path; ConfigError (one
    line naming ``resume_sweep``) otherwise."""
    value = str(config.resume_sweep)
    if is_optuna(config):
        raise ConfigError(OPTUNA)
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"resume_sweep={value}: no such directory (resume_sweep names the directory of the sweep "
                          "to resume, outputs/multiruns/<time>)")  # fmt: skip
    if not path.is_dir():
        raise ConfigError(f"resume_sweep={value} is a file, not a sweep's directory")
    owner = read_owner(path)
    if owner.get("kind") != "sweep":
        if owner.get("sweep"):
            what = f"a job's directory: resume its sweep, resume_sweep={_resume_shown(Path(str(owner['sweep'])))}"
        elif owner:
            what = f"the directory of a {owner.get('kind', 'run')}, not of a sweep"
        else:
            what = f"not the directory of an rnnlab sweep (it has no {OWNER_FILE} of a sweep)"
        raise ConfigError(f"resume_sweep={value} is {what}; resume_sweep names the directory of the sweep to "
                          "resume, outputs/multiruns/<time>")  # fmt: skip
    if sweep_dir is not None and os.path.realpath(Path(sweep_dir).expanduser()) != os.path.realpath(path):
        raise ConfigError(f"resume_sweep={value} and hydra.sweep.dir={sweep_dir} name different directories; a "
                          "resumed sweep runs in its own directory: leave hydra.sweep.dir out")  # fmt: skip
    if still_running(owner):
        raise ConfigError(f"resume_sweep={value} belongs to {describe_owner(owner)}; a sweep is resumed "
                          "once it has ended")  # fmt: skip
    return path


def start_resumed_sweep(claim: Claim) -> None:
    """The resumed sweep has taken over its directory: the earlier attempt's ``multirun.yaml``, which the sweeper is
    about to write again, is kept as ``multirun.yaml.partial-N``."""
    record = claim.path / "multirun.yaml"
    if record.is_file():
        set_aside(record)
