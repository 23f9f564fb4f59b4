"""Where a number was measured: the machine, the libraries and their builds, the thread counts, the code's commit,
and a checksum of the data. Every run records it in ``summary.json`` (``environment``, ``data_sha256``), and the
benchmarks and study reports print it, as benchmark reports do.

``threads`` (the top-level config key): the CPU threads of torch's intra-op pool and of NumPy's BLAS (and any other
OpenMP pool in the process, through threadpoolctl). Summation order depends on it, so two runs that differ only
in their thread count may follow different float trajectories; the key makes it a recorded, reproducible choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# environment variables that change how the libraries compute or allocate
ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "LD_PRELOAD", "CUDA_VISIBLE_DEVICES")  # fmt: skip


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> dict[str, Any] | None:
    """The commit of the rnnlab checkout this code runs from (and whether it has uncommitted changes), or None
    for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def blas_info() -> list[dict[str, Any]]:
    """NumPy's BLAS and the other thread pools loaded in this process (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture", "filepath")
    return [{k: pool.get(k) for k in keep if k in pool} for pool in threadpool_info()]


def torch_build() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "mkl": bool(torch.backends.mkl.is_available()),
        "openmp": bool(torch.backends.openmp.is_available()),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }
    with contextlib.suppress(AttributeError):  # torch < 2.1
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def environment() -> dict[str, Any]:
    """The machine and software a measurement was taken on."""
    import numpy as np

    import rnnlab

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    build = torch_build()  # first: torch's OpenMP pool is then loaded, and threadpoolctl lists it
    out: dict[str, Any] = {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rnnlab": rnnlab.__version__,
        "git": git_commit(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "torch": build,
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
    }
    try:
        import lightning

        out["lightning"] = lightning.__version__
    except ImportError:
        pass
    return out


def describe(env: dict[str, Any]) -> str:
    """One paragraph for a report: CPU, cores, Python, NumPy and its BLAS, torch and its build, threads."""
    blas = [p for p in env.get("blas", []) if p.get("user_api") == "blas"]
    blas_text = ", ".join(
        f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads"
        + (f", {p['architecture']}" if p.get("architecture") else "")
        + ")"
        for p in blas
    )
    t = env.get("torch", {})
    build = ", ".join(
        name for name, on in (("oneDNN", t.get("mkldnn")), ("MKL", t.get("mkl")), ("OpenMP", t.get("openmp"))) if on
    )
    git = env.get("git") or {}
    commit = f"; rnnlab commit {git['commit'][:10]}{' (with local changes)' if git.get('dirty') else ''}" if git else ""
    variables = ", ".join(f"{k}={v}" for k, v in env.get("env", {}).items()) or "none set"
    kind = f"CUDA {t['cuda']}" if t.get("cuda") else "CPU build"
    capability = f", capability {t['cpu_capability']}" if t.get("cpu_capability") else ""
    return (
        f"{env.get('cpu')} ({env.get('cpus')} CPUs, {env.get('cpus_usable')} usable), {env.get('platform')}; "
        f"Python {env.get('python')}; NumPy {env.get('numpy')} with {blas_text or 'an unknown BLAS'}; "
        f"torch {t.get('version')} ({kind}{', ' + build if build else ''}{capability}; "
        f"{t.get('threads')} intra-op threads); Lightning {env.get('lightning', '?')}; environment variables: "
        f"{variables}{commit}"
    )


def data_checksum(files: Sequence[str | os.PathLike[str]], config: dict[str, Any]) -> dict[str, Any]:
    """The data's identity: the sha256 of the files it is read from (name and content), or, for generated data,
    of its generator's settings."""
    import json

    digest = hashlib.sha256()
    if files:
        for path in files:
            digest.update(Path(path).name.encode() + b"\0" + file_sha256(path).encode() + b"\0")
        return {"sha256": digest.hexdigest(), "of": [str(p) for p in files]}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    return {"sha256": digest.hexdigest(), "of": "the generator's settings (data.*)"}


class ThreadCount:
    """``with ThreadCount(threads) as count:`` runs the block with ``threads`` CPU threads in torch and in every BLAS
    and OpenMP pool of the process (None: the libraries' own choice); ``count.apply()`` also limits the pools of
    libraries loaded since (scipy's BLAS, say). The previous counts come back when the block ends."""

    def __init__(self, threads: int | None) -> None:
        self.threads = None if threads is None else int(threads)
        self._torch_before: int | None = None
        self._controllers: list[Any] = []

    def __enter__(self) -> ThreadCount:
        if self.threads is not None:
            import torch

            self._torch_before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            self.apply()
        return self

    def apply(self) -> None:
        if self.threads is None:
            return
        try:
            from threadpoolctl import threadpool_info, threadpool_limits
        except ImportError:  # pragma: no cover (a dependency)
            return
        if any(pool.get("num_threads") != self.threads for pool in threadpool_info()):
            self._controllers.append(threadpool_limits(limits=self.threads))

    def __exit__(self, *exc: Any) -> None:
        for controller in reversed(self._controllers):
            controller.restore_original_limits()
        self._controllers = []
        if self._torch_before is not None:
            import torch

            torch.set_num_threads(self._torch_before)
