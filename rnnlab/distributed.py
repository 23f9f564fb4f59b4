"""One run in several processes (torch backend): Lightning's DDP, whoever starts the processes.

* ``torchrun`` or ``srun`` start every process themselves; Lightning reads their environment (TorchElastic,
  SLURM) and each process runs the whole of ``rnnlab-train``. :func:`run_stamp` gives all of them one run
  directory, and :func:`quiet_argv` keeps the processes other than rank 0 from writing Hydra's files into it.
* ``trainer=ddp`` without a launcher: Lightning starts the other local processes itself, re-running the command
  line with ``hydra.run.dir`` set to this run's directory.
* ``trainer.strategy=ddp_spawn`` (also ``ddp_fork``, ``ddp_notebook`` and their ``_find_unused_parameters_*``
  variants): :func:`spawn_train` starts the processes here, and each runs all of ``train(cfg)`` under
  ``strategy=ddp``, exactly as under torchrun. Lightning's own spawn launcher runs only ``trainer.fit`` in the
  children and hands back to the parent nothing but the metrics, the weights and the best checkpoint's path, so
  the parent would write summary.json without the step count, the timings or the best score, rewrite
  last.ckpt from a trainer that never stepped, and start a second set of log files for ``trainer.test``.

Every process reads the same config, so the run directory, the seed and the data are the same in all of them;
only global rank 0 writes files. Helpers for the metric reductions (:func:`all_reduce_sum`,
:func:`gather_rows`) are no-ops in a single process. This module imports no torch at import time: rnnlab.config
and rnnlab.cli import it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from rnnlab.errors import ConfigError, RnnlabError

# Lightning's registered strategies that start their processes with torch.multiprocessing
_SPAWNING = re.compile(r"^ddp_(spawn|fork|notebook)((?:_find_unused_parameters_(?:true|false))?)$")
_RANK_KEYS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # lightning.fabric's _get_rank order
WORKER_ENV = "RNNLAB_SPAWNED_WORKER"  # set in the processes spawn_train starts
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
    ``.hydra/`` copy of the config and no log file (warnings still reach stderr). Other processes unchanged."""
    if launch_rank() == 0 or any(a in ("-m", "--multirun") or a.startswith("--multirun") for a in argv):
        return argv
    wanted = {"hydra.output_subdir": "null", "hydra/job_logging": "none"}
    extra = [f"{k}={v}" for k, v in wanted.items() if not any(a.lstrip("+~").startswith(k + "=") for a in argv)]
    return [*argv, *extra]


# -------------------------------------------------------------------------------------------- ddp_spawn
def spawn_method(strategy: Any) -> str | None:
    """The start method ("spawn" or "fork") of a strategy whose processes rnnlab starts itself, else None."""
    match = _SPAWNING.match(str(strategy)) if isinstance(strategy, str) else None
    if match is None:
        return None
    return "spawn" if match.group(1) == "spawn" else "fork"


def worker_strategy(strategy: Any) -> Any:
    """In a process spawn_train started: the ``ddp`` strategy the spawning one stands for (``ddp_spawn`` ->
    ``ddp``, ``ddp_spawn_find_unused_parameters_true`` -> ``ddp_find_unused_parameters_true``); elsewhere, and
    for any other strategy, ``strategy`` itself."""
    match = _SPAWNING.match(str(strategy)) if isinstance(strategy, str) else None
    if match is None or os.environ.get(WORKER_ENV) != "1":
        return strategy
    return f"ddp{match.group(2)}"


def wants_spawn(cfg: Any) -> bool:
    """True when ``train(cfg)`` should start the processes of a ddp_spawn-like strategy (not inside one)."""
    return os.environ.get(WORKER_ENV) != "1" and spawn_method(cfg.trainer.strategy) is not None


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _process_count(trainer_cfg: Any) -> int:
    """The number of processes Lightning would run for these accelerator and devices settings on this machine."""
    import lightning as L

    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the probe's "GPU available: ..." lines; the processes print them
    try:
        probe = L.Trainer(
            accelerator=trainer_cfg.accelerator,
            devices=trainer_cfg.devices,
            strategy=str(trainer_cfg.strategy),
            num_nodes=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    except Exception as err:  # Lightning's MisconfigurationException, ValueError, ...
        raise ConfigError(f"trainer: {str(err).splitlines()[0]}") from err
    finally:
        quiet.setLevel(level)
    return int(probe.num_devices)


def _logging_setup() -> dict[str, Any]:
    """What the processes need to log like this one: the root logger's level, format and log files."""
    root = logging.getLogger()
    files = [h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)]
    formatter = next((h.formatter for h in root.handlers if h.formatter is not None), None)
    return {
        "level": root.level,
        "files": files,
        "format": formatter._fmt if formatter is not None else "[%(asctime)s][%(levelname)s] %(message)s",
        "datefmt": formatter.datefmt if formatter is not None else None,
        "overrides": command_line_overrides(),
    }


OVERRIDES_ENV = "RNNLAB_OVERRIDES"  # the command line's overrides (JSON), for processes that have no Hydra app


def command_line_overrides() -> list[str]:
    """The overrides the run was started with (Hydra's record of them; in a spawned process, the parent's)."""
    import json

    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # not a Hydra app (train() called from Python)
        pass
    try:
        return [str(o) for o in json.loads(os.environ.get(OVERRIDES_ENV, "[]"))]
    except ValueError:
        return []


def _configure_logging(rank: int, setup: dict[str, Any]) -> None:
    """Rank 0 logs to the console and appends to the run's log file; the others print warnings only."""
    import json

    os.environ[OVERRIDES_ENV] = json.dumps(setup.get("overrides") or [])
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter(setup["format"], setup["datefmt"])
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout if rank == 0 else sys.stderr)]
    if rank == 0:
        handlers += [logging.FileHandler(path, mode="a") for path in setup["files"]]
    for handler in handlers:
        handler.setFormatter(formatter)
        if rank != 0:  # also for records of loggers with their own level (Lightning's INFO lines)
            handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    root.setLevel(setup["level"] if rank == 0 else logging.WARNING)


# What would make Lightning read ranks from another launcher (SLURM, torchrun, Kubeflow, LSF) than this one: a
# ddp_spawn run inside an sbatch allocation, say
_OTHER_LAUNCHERS = ("RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID",
                    "JSM_NAMESPACE_RANK", "LSB_JOBID")  # fmt: skip


def _worker(local_rank: int, cfg: Any, nprocs: int, port: int, queue: Any, setup: dict[str, Any]) -> None:
    for key in _OTHER_LAUNCHERS:
        os.environ.pop(key, None)
    os.environ.update(
        {
            WORKER_ENV: "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(nprocs),
            "NODE_RANK": "0",
            "LOCAL_RANK": str(local_rank),  # Lightning: processes created externally, rank from here
        }
    )
    _configure_logging(local_rank, setup)
    from rnnlab.runtime.signals import RunInterrupted
    from rnnlab.train import train

    try:
        value = train(cfg).value
    except RnnlabError as err:  # a user error: raised again in the parent, one line as in a single process
        try:
            queue.put(("error", err))
        except Exception:  # an error that does not pickle: its line
            queue.put(("error", ConfigError(str(err).splitlines()[0] if str(err) else type(err).__name__)))
        raise SystemExit(1) from None
    except RunInterrupted as stop:  # the signal contract: rank 0's line goes to the parent
        if local_rank == 0:
            queue.put(("interrupted", (stop.signum, stop.message)))
        raise SystemExit(stop.exit_code) from None
    if local_rank == 0:
        queue.put(("done", value))


def spawn_train(cfg: Any) -> float | None:
    """Run ``train(cfg)`` in as many processes as ``trainer.devices`` asks for, on this machine, and return rank
    0's result. A user error in a process (rnnlab.errors) is raised here again as the same one-line error."""
    import copy

    import torch.multiprocessing as mp
    from omegaconf import OmegaConf

    trainer = cfg.trainer
    if int(trainer.num_nodes) != 1:
        raise ConfigError(
            f"trainer.strategy={trainer.strategy} starts its processes on this machine only; for "
            f"trainer.num_nodes={trainer.num_nodes} use trainer=ddp and start the processes with torchrun or srun"
        )
    nprocs = _process_count(trainer)
    resolved = copy.deepcopy(cfg)
    OmegaConf.resolve(resolved)  # ${hydra:...} and ${now:...} need the Hydra app: resolve them here, once
    method = spawn_method(trainer.strategy)
    context = mp.get_context(method)
    queue = context.SimpleQueue()
    logging.getLogger("rnnlab").info("Starting %d processes (trainer.strategy=%s)", nprocs, trainer.strategy)
    processes = mp.start_processes(
        _worker,
        args=(resolved, nprocs, _free_port(), queue, _logging_setup()),
        nprocs=nprocs,
        join=False,
        start_method=method,
    )
    try:
        with _forwarding_signals([p.pid for p in processes.processes]):  # each process stops at the same step
            while not processes.join():
                pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        from rnnlab.runtime.signals import RunInterrupted

        while not queue.empty():
            message = queue.get()
            if message[0] == "error":
                raise message[1] from None
            if message[0] == "interrupted":
                raise RunInterrupted(*message[1]) from None
        raise
    value = None
    while not queue.empty():
        message = queue.get()
        if message[0] == "done":
            value = message[1]
    return value


@contextlib.contextmanager
def _forwarding_signals(pids: list[int]) -> Iterator[None]:
    """While the processes of a spawned run work: SIGTERM and SIGINT are passed on to them (they follow the signal
    contract together, rnnlab.runtime.signals) instead of stopping this process, which waits for them."""
    import signal

    def forward(signum: int, frame: Any) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for signum in previous:
        signal.signal(signum, forward)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


def all_reduce_sum(values: list[float], device: Any = None) -> list[float]:
    """``values`` summed over every process (float64; integer counts stay exact below 2**53); ``values`` itself
    in a single process. Every process has to call it, with as many values."""
    world = _world(device)
    if world is None:
        return [float(v) for v in values]
    import torch

    dist, device = world
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_reduce_max(values: list[float], device: Any = None) -> list[float]:
    """``values`` maximised over every process; ``values`` itself in a single process. Every process calls it."""
    world = _world(device)
    if world is None:
        return [float(v) for v in values]
    import torch

    dist, device = world
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.cpu().tolist()


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
