"""Training-step time, throughput and memory of both backends over a grid of hidden sizes, lengths and dtypes.

    .venv/bin/python scripts/bench_grid.py                                   # LSTM, H 64..512 x T 50..200 x f32/f64
    .venv/bin/python scripts/bench_grid.py --cells rnn,lstm,gru --hidden 256 --lengths 100
    .venv/bin/python scripts/bench_grid.py --json outputs/bench_grid.json --no-memory

One step is what ``scripts/bench_backends.py`` times: zero the gradients, forward over T steps, backward from a
fixed output gradient with the gradient of the inputs, for the NumPy network and torch's fused nn.LSTM/GRU/RNN
built from the same initial weights (batch ``--batch``, input ``--input``).

**Time** is measured as a user's run experiences it: in this process, with glibc's default allocation (no
``MALLOC_*`` tuning; the script records the allocator variables it ran under and says so when one is set) and the
libraries' default thread counts (``--threads`` to choose). Per grid point the two backends' blocks alternate
(``--rounds`` x (``--warmup`` untimed + ``--iters`` timed) calls each) and the medians are taken.

**Memory** is measured apart from the timing, one fresh process per backend and grid point (``--memory-probe``),
also with the default allocator, so that no measurement sees another's freed memory:

* ``rss_mb``: the peak resident memory that the first three steps add to the process (the kernel's peak-RSS
  counter is reset first, ``/proc/self/clear_refs``): what the operating system has to provide;
* ``alloc_mb``: the peak of the bytes a step holds allocated, counted by each library itself: NumPy's allocations
  through ``tracemalloc`` (from an empty buffer pool: the pool's buffers are a step's working memory), torch's
  through its profiler (``profile_memory=True``: each operator's net allocations, summed in time order).

Throughput: sequences per second (batch / median step) and tokens per second (batch x T / median step). The JSON
(``--json``) holds the rows, the measurement conditions and the environment (rnnlab.provenance).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rnnlab.atomic import write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
ALLOCATOR_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                  "MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "LD_PRELOAD")  # fmt: skip


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cells", default="lstm", help="comma-separated subset of rnn, lstm, gru (lstm)")
    p.add_argument("--hidden", default="64,128,256,512", type=_ints, help="hidden sizes (64,128,256,512)")
    p.add_argument("--lengths", default="50,100,200", type=_ints, help="sequence lengths (50,100,200)")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--batch", "-B", type=int, default=64, dest="B")
    p.add_argument("--input", "-I", type=int, default=64, dest="I")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls at the start of every block (5)")
    p.add_argument("--iters", type=int, default=5, help="timed calls per block (5)")
    p.add_argument("--rounds", type=int, default=2, help="alternating blocks per backend (2)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of torch and NumPy's BLAS (default: theirs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", action="store_true", help="time only")
    p.add_argument("--memory-lengths", default=None, type=_ints, help="measure memory at these lengths only (all)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # cell,dtype,H,T,backend (internal)
    return p.parse_args(argv)


def allocator_conditions() -> dict[str, str]:
    """The allocator settings of this process that differ from glibc's defaults (empty: the defaults)."""
    return {k: os.environ[k] for k in ALLOCATOR_VARS if k in os.environ}


# ------------------------------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb(step: Any, calls: int = 3) -> float | None:
    """The peak resident memory (MB) that ``calls`` calls of ``step`` add, or None where the kernel cannot tell."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    base = _status_kb("VmRSS")
    for _ in range(calls):
        step()
    peak = _status_kb("VmHWM")
    if base is None or peak is None:
        return None
    return max(peak - base, 0) / 1024.0


def numpy_allocated_mb(step: Any) -> float:
    """Peak bytes (MB) NumPy holds allocated during one step, from an empty buffer pool (tracemalloc)."""
    import tracemalloc

    from rnnlab.models.numpy import memory

    gc.collect()
    memory.release_idle()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return max(peak - before, 0) / 2**20


def torch_allocated_mb(step: Any) -> float:
    """Peak bytes (MB) torch's CPU allocator holds during one step: the profiler's per-operator net allocations,
    added up in time order."""
    import logging

    from torch.profiler import ProfilerActivity, profile

    logging.getLogger("torch").setLevel(logging.ERROR)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    level = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        level += event.self_cpu_memory_usage
        peak = max(peak, level)
    return peak / 2**20


def memory_probe(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: the memory of one backend's step at one grid point."""
    from bench_backends import training_steps

    cell, dtype, hidden, length, backend = spec.split(",")
    shape = argparse.Namespace(**{**vars(args), "H": int(hidden), "T": int(length)})
    steps, _ = training_steps(cell, dtype, shape, check=False)
    step = steps[backend]
    rss = peak_rss_mb(step)  # the first calls: cold pools and caches, as a run's first steps
    allocated = numpy_allocated_mb(step) if backend == "numpy" else torch_allocated_mb(step)
    return {"rss_mb": rss, "alloc_mb": allocated, "allocator": allocator_conditions()}


def measure_memory(cell: str, dtype: str, hidden: int, length: int, backend: str, args: argparse.Namespace) -> dict:
    point = f"{cell},{dtype},{hidden},{length},{backend}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", point, "--batch", str(args.B),
           "--input", str(args.I), "--layers", str(args.layers), "--seed", str(args.seed)]  # fmt: skip
    if args.bidirectional:
        cmd.append("--bidirectional")
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARS}  # the default allocator
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"bench_grid: the memory probe failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------- timing
def time_point(cell: str, dtype: str, hidden: int, length: int, args: argparse.Namespace) -> dict[str, Any]:
    from bench_backends import alternate, training_steps

    shape = argparse.Namespace(**{**vars(args), "H": hidden, "T": length})
    steps, check = training_steps(cell, dtype, shape)
    med = alternate(steps, args)
    row: dict[str, Any] = {"cell": cell, "dtype": dtype, "hidden": hidden, "length": length, "batch": args.B}
    for name in steps:
        row[f"{name}_ms"] = med[name] * 1e3
        row[f"{name}_seq_per_s"] = args.B / med[name]
        row[f"{name}_tokens_per_s"] = args.B * length / med[name]
    row["time_ratio"] = med["numpy"] / med["torch"]
    row["max_abs_diff"] = check
    return row


def conditions(args: argparse.Namespace) -> dict[str, Any]:
    """What the timings and memory figures were measured under (the report states these)."""
    import torch

    from rnnlab.provenance import blas_info

    return {
        "timing": {
            "process": "one process; the two backends' blocks alternate",
            "allocator": allocator_conditions() or "glibc default",
            "torch_threads": torch.get_num_threads(),
            "blas_threads": [p.get("num_threads") for p in blas_info() if p.get("user_api") == "blas"],
            "warmup": args.warmup,
            "iters": args.iters,
            "rounds": args.rounds,
        },
        "memory": None
        if args.no_memory
        else {
            "process": "a fresh process per backend and grid point",
            "allocator": "glibc default",
            "rss": "peak resident memory added by the first three steps (VmHWM reset before them)",
            "allocated": "peak bytes held during one step: NumPy by tracemalloc (empty buffer pool first), torch by "
            "its profiler (profile_memory=True, operators' net allocations in time order)",
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args)))
        return 0
    import numpy as np
    import torch

    from rnnlab.provenance import describe, environment

    odd = allocator_conditions()
    if odd:
        print(f"bench_grid: note: the allocator is tuned ({odd}); the timings describe that setting, not a default run",
              file=sys.stderr)  # fmt: skip
    env = environment()
    print(describe(env))
    print(f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), batch {args.B}")
    header = f"{'cell':5s} {'dtype':8s} {'H':>4s} {'T':>4s} {'numpy ms':>9s} {'torch ms':>9s} {'ratio':>6s} "
    print(header + f"{'numpy MB':>9s} {'torch MB':>9s} {'numpy alloc':>11s} {'torch alloc':>11s}", flush=True)
    rows = []
    for cell in args.cells.split(","):
        for dtype in args.dtypes.split(","):
            for hidden in args.hidden:
                for length in args.lengths:
                    r = time_point(cell, dtype, hidden, length, args)
                    if not args.no_memory and (args.memory_lengths is None or length in args.memory_lengths):
                        for backend in ("numpy", "torch"):
                            m = measure_memory(cell, dtype, hidden, length, backend, args)
                            r[f"{backend}_rss_mb"], r[f"{backend}_alloc_mb"] = m["rss_mb"], m["alloc_mb"]
                        if r["numpy_alloc_mb"] and r["torch_alloc_mb"]:
                            r["alloc_ratio"] = r["numpy_alloc_mb"] / r["torch_alloc_mb"]
                        if r["numpy_rss_mb"] and r["torch_rss_mb"]:
                            r["rss_ratio"] = r["numpy_rss_mb"] / r["torch_rss_mb"]
                    rows.append(r)
                    mb = [f"{r.get(k):{w}.1f}" if r.get(k) is not None else f"{'-':>{w}s}"
                          for k, w in (("numpy_rss_mb", 9), ("torch_rss_mb", 9), ("numpy_alloc_mb", 11),
                                       ("torch_alloc_mb", 11))]  # fmt: skip
                    print(f"{cell:5s} {dtype:8s} {hidden:4d} {length:4d} {r['numpy_ms']:9.2f} {r['torch_ms']:9.2f} "
                          f"{r['time_ratio']:6.2f} {' '.join(mb)}", flush=True)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"batch": args.B, "input": args.I, "conditions": conditions(args), "environment": env, "rows": rows}
        write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
