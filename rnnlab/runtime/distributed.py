"""One run in several processes (torch backend): Lightning's DDP, whoever starts the processes.

* ``torchrun`` or ``srun`` start every process themselves; Lightning reads their environment (TorchElastic,
  SLURM) and each process runs the whole of ``rnnlab-train``. :func:`run_stamp` gives all of them one run
  directory, and :func:`quiet_argv` keeps the processes other than rank 0 from writing Hydra's files into it.
  ``torchrun --standalone --nproc-per-node=2 -m rnnlab trainer=ddp ...`` (rnnlab/__main__.py).
* ``trainer.strategy=ddp trainer.devices=2`` (or ``trainer=ddp``) without a launcher: Lightning's subprocess
  launcher starts the other local processes itself, re-running the command line with ``hydra.run.dir`` set to
  this run's directory; each of them, too, runs the whole of ``rnnlab-train``.
* ``trainer.strategy=ddp_spawn`` (also ``ddp_fork``, ``ddp_notebook`` and their ``_find_unused_parameters_*``
  variants) is refused in one line that gives the equivalent ``ddp`` and torchrun commands
  (:func:`check_launcher`): Lightning's spawn launcher runs only ``trainer.fit`` in the processes it starts and
  hands back to the first one nothing but the metrics, the weights and the best checkpoint's path, so that
  process would write summary.json without the step count, the timings or the best score, rewrite last.ckpt
  from a trainer that never stepped, and start a second set of processes and log files for ``trainer.test``.

Every process reads the same config, so the run directory, the seed and the data are the same in all of them;
only global rank 0 writes files. Helpers for the metric reductions (:func:`all_reduce_sum`,
:func:`gather_rows`) are no-ops in a single process. This module imports no torch at import time: rnnlab.config
and rnnlab.cli import it.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import Any

from rnnlab.errors import ConfigError

# Lightning's registered strategies that start their processes with torch.multiprocessing
_SPAWNING = re.compile(r"^ddp_(spawn|fork|notebook)((?:_find_unused_parameters_(?:true|false))?)$")
_RANK_KEYS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # lightning.fabric's _get_rank order
STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S-%f"


# --------------------------------------------------------------------------------------- launch environment
def launch_rank() -> int:
    """This process's rank as a launcher (torchrun, srun, Lightning) announced it; 0 when none did."""
    for key in _RANK_KEYS:
        value = os.environ.get(key)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _env_int(key: str, default: int = 1) -> int:
    try:
        return int(os.environ.get(key, default))
    except ValueError:
        return default


def _process_start(pid: int) -> datetime | None:
    """When process ``pid`` started (Linux /proc), to 1/100 s; None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of proc(5): start time in clock ticks after boot
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def launch_stamp() -> str | None:
    """A name that every process of one torchrun or srun launch computes alike, or None outside such a launch.

    torchrun on one node: the start time of the torchrun agent, the parent of every worker. torchrun over several
    nodes: ``torchrun-<rendezvous id>`` (``--rdzv-id``; without one, each node falls back to its agent's start
    time). srun: ``slurm-<job id>.<step id>``, new for every srun of a job.
    """
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and _env_int("WORLD_SIZE") > 1:
        run_id = env["TORCHELASTIC_RUN_ID"]
        if _env_int("GROUP_WORLD_SIZE") > 1 and run_id not in ("", "none"):
            return f"torchrun-{run_id}"
        started = _process_start(os.getppid())
        return started.strftime(STAMP_FORMAT) if started is not None else None
    if _env_int("SLURM_STEP_NUM_TASKS") > 1 and env.get("SLURM_JOB_ID") and env.get("SLURM_STEP_ID", "").isdigit():
        return f"slurm-{env['SLURM_JOB_ID']}.{env['SLURM_STEP_ID']}"
    return None


def run_stamp() -> str:
    """The time stamp in a run directory's name (conf/hydra/default.yaml): now, to the microsecond; the same in
    every process of a torchrun or srun launch (:func:`launch_stamp`), so that they share one run directory."""
    return launch_stamp() or datetime.now().strftime(STAMP_FORMAT)


def launch_devices() -> int | str:
    """trainer=ddp's ``devices``: the processes per node that torchrun (LOCAL_WORLD_SIZE) or srun
    (SLURM_NTASKS_PER_NODE, which Lightning requires and checks) started; "auto" without a launcher."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and "LOCAL_WORLD_SIZE" in env:
        return _env_int("LOCAL_WORLD_SIZE")
    if "SLURM_NTASKS_PER_NODE" in env and env["SLURM_NTASKS_PER_NODE"].isdigit():
        return int(env["SLURM_NTASKS_PER_NODE"])
    return "auto"


def launch_nodes() -> int:
    """trainer=ddp's ``num_nodes``: the nodes of a torchrun (GROUP_WORLD_SIZE) or srun (SLURM_NNODES) launch, else 1."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and "GROUP_WORLD_SIZE" in env:
        return _env_int("GROUP_WORLD_SIZE")
    if "SLURM_NTASKS_PER_NODE" in env and "SLURM_NNODES" in env:
        return _env_int("SLURM_NNODES")
    return 1


def quiet_argv(argv: list[str]) -> list[str]:
    """The command line of a process that is not rank 0 of a launch, with Hydra's outputs switched off: no
    ``.hydra/`` copy of the config and no log file; its warnings reach stderr (conf/hydra/job_logging/other_ranks.yaml).
    Other processes unchanged."""
    if launch_rank() == 0 or any(a in ("-m", "--multirun") or a.startswith("--multirun") for a in argv):
        return argv
    wanted = {"hydra.output_subdir": "null", "hydra/job_logging": "other_ranks"}
    extra = [f"{k}={v}" for k, v in wanted.items() if not any(a.lstrip("+~").startswith(k + "=") for a in argv)]
    return [*argv, *extra]


def started_by_lightning(argv: list[str]) -> bool:
    """This process is a rank > 0 that Lightning's subprocess launcher started (``trainer.strategy=ddp`` without
    torchrun or srun): the launcher re-runs the command line with ``hydra.job.name=train_ddp_process_<rank>``."""
    return launch_rank() > 0 and any(a.startswith("hydra.job.name=train_ddp_process_") for a in argv)


def wait_for_parent(timeout: float = 30.0) -> None:
    """Return once the process that started this one has ended, or after ``timeout`` seconds. Lightning's launcher
    watches the processes it started and, as soon as one of them ends with a non-zero status, kills all of them and
    itself (rank 0); a rank > 0 that stops together with rank 0 (a signal, a user error) lets rank 0 finish first:
    its summary.json and its line."""
    import time

    parent = os.getppid()
    deadline = time.monotonic() + timeout
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)


# --------------------------------------------------------------------- the command line; spawning strategies
def command_line_overrides() -> list[str]:
    """The overrides the run was started with (Hydra's record of them); none outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # not a Hydra app (train() called from Python)
        pass
    return []


def _process_count(devices: Any, accelerator: Any) -> int | None:
    """The processes per node that ``trainer.devices`` asks for, where the config alone says: a count, a list of
    devices, "0,1"; on the CPU "auto" is one (as Lightning counts). None: Lightning counts the machine's GPUs."""
    if isinstance(devices, int):
        return devices if devices > 0 else None  # -1: every device
    if not isinstance(devices, str):  # a list of device indices
        return len(devices)
    text = devices.strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text == "auto" and str(accelerator).lower() == "cpu":
        return 1
    return None


def check_launcher(trainer: Any, overrides: list[str] | None = None) -> None:
    """Refuse Lightning's spawning strategies (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook`` and their
    ``_find_unused_parameters_*`` variants) with one line that gives the same run under Lightning's ``ddp`` (its
    subprocess launcher) and under torchrun. Their launcher runs only ``trainer.fit`` in the processes it starts and
    hands back to the first one the metrics, the weights and the best checkpoint's path only: not the step count,
    the timings, the NumPy network, the signal contract's outcome, nor the state ``trainer.test`` and summary.json
    need. ``overrides``: the command line's (default: Hydra's record of them)."""
    strategy = trainer.strategy
    match = _SPAWNING.match(str(strategy)) if isinstance(strategy, str) else None
    if match is None:
        return
    import shlex

    ddp = f"ddp{match.group(2) or ''}"
    count = _process_count(trainer.devices, trainer.accelerator)
    kept = [o for o in (command_line_overrides() if overrides is None else overrides)
            if not o.lstrip("+~").startswith(("trainer.strategy=", "trainer.devices="))]  # fmt: skip
    others = " ".join(shlex.quote(o) for o in kept)
    others = f"{others} " if others else ""
    devices = shlex.quote(f"trainer.devices={trainer.devices}")
    why = f"trainer.strategy={strategy}: Lightning's spawn launcher runs only trainer.fit in its processes"
    if int(trainer.num_nodes) != 1:
        raise ConfigError(
            f"{why}, on this machine only; for trainer.num_nodes={trainer.num_nodes} start the processes on every "
            f"node with torchrun or srun and trainer.strategy={ddp} (conf/trainer/ddp.yaml)"
        )
    nproc = count if count is not None else "gpu" if str(trainer.accelerator).lower() in ("gpu", "cuda") else None
    torchrun = ""
    if nproc is not None:  # torchrun's processes per node; "gpu": one per GPU, as Lightning's devices=auto
        per_process = f" trainer.devices={count}" if count is not None else ""
        torchrun = (f", or with torchrun: torchrun --standalone --nproc-per-node={nproc} -m rnnlab {others}"
                    f"trainer.strategy={ddp}{per_process}")  # fmt: skip
    raise ConfigError(
        f"{why}; the same run with Lightning's subprocess launcher: rnnlab-train {others}trainer.strategy={ddp} "
        f"{devices}{torchrun}"
    )


# ------------------------------------------------------------------------------------------ reductions
def _world(device: Any) -> tuple[Any, Any] | None:
    """(torch.distributed, device) inside a multi-process run, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    if dist.get_backend() == "nccl" and (device is None or str(device) == "cpu"):
        import torch

        device = torch.device("cuda", torch.cuda.current_device())
    return dist, device


def _all_reduce(values: list[float], op: str, device: Any) -> list[float]:
    """``values`` reduced over every process with ``torch.distributed.ReduceOp.<op>`` (float64); ``values`` itself
    in a single process. Every process has to call it, with as many values."""
    world = _world(device)
    if world is None:
        return [float(v) for v in values]
    import torch

    dist, device = world
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
    return t.cpu().tolist()


def all_reduce_sum(values: list[float], device: Any = None) -> list[float]:
    """``values`` summed over every process (integer counts stay exact below 2**53)."""
    return _all_reduce(values, "SUM", device)


def all_reduce_max(values: list[float], device: Any = None) -> list[float]:
    """``values`` maximised over every process."""
    return _all_reduce(values, "MAX", device)


def gather_rows(array: Any, device: Any = None) -> Any:
    """The rows of ``array`` (a NumPy array) of every process, concatenated in rank order; ``array`` itself in a
    single process. Processes may hold different numbers of rows (none at all too); the other dimensions and the
    dtype must agree. Every process has to call it."""
    world = _world(device)
    if world is None:
        return array
    import numpy as np
    import torch

    dist, device = world
    local = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    count = torch.tensor([local.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return np.concatenate([p[:n].cpu().numpy() for p, n in zip(parts, sizes, strict=True)])
