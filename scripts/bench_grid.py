"""Training-step time, throughput and peak memory of both backends over a grid of hidden sizes, lengths and dtypes.

    .venv/bin/python scripts/bench_grid.py                                   # LSTM, H 64..512 x T 50..200 x f32/f64
    .venv/bin/python scripts/bench_grid.py --cells rnn,lstm,gru --hidden 256 --lengths 100
    .venv/bin/python scripts/bench_grid.py --json outputs/bench_grid.json

One step is what ``scripts/bench_backends.py`` times: zero the gradients, forward over T steps, backward from a
fixed output gradient with the gradient of the inputs, for the NumPy network and torch's fused nn.LSTM/GRU/RNN
built from the same initial weights (batch ``--batch``, input ``--input``). Per grid point the two backends'
blocks alternate (``--rounds`` x (``--warmup`` untimed + ``--iters`` timed) calls each) and the medians are taken.

Throughput: sequences per second (batch / median step) and tokens per second (batch x T / median step).

Peak memory: the extra resident memory one step needs, measured by the kernel: before a backend's first step the
peak-RSS counter is reset (``/proc/self/clear_refs``, Linux) and the current RSS read; after three steps the peak
(VmHWM) minus that RSS is the step's peak working memory (activations kept for the backward, gradients, the
NumPy backend's pooled buffers, torch's workspaces). The input, output gradient and weights exist before and are
not counted. The script re-executes itself with glibc's MALLOC_MMAP_THRESHOLD_ fixed at 128 KiB, so that large
arrays are returned to the kernel when freed and one measurement's freed memory does not hide the next one's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_step_mb(step: Any) -> float | None:
    """Extra resident memory (MB) at the peak of three calls of ``step``, or None where the kernel cannot tell."""
    from rnnlab.models.numpy import memory

    gc.collect()
    memory.release_idle()  # earlier grid points' pooled buffers would otherwise serve this one uncounted
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    base = _status_kb("VmRSS")
    for _ in range(3):
        step()
    peak = _status_kb("VmHWM")
    if base is None or peak is None:
        return None
    return max(peak - base, 0) / 1024.0


def bench_point(cell: str, dtype: str, hidden: int, length: int, args: argparse.Namespace) -> dict[str, Any]:
    from bench_backends import alternate, training_steps

    shape = argparse.Namespace(**{**vars(args), "H": hidden, "T": length})
    steps, check = training_steps(cell, dtype, shape)
    memory = {name: peak_step_mb(fn) for name, fn in steps.items()}  # the first calls also warm up
    med = alternate(steps, args)
    row: dict[str, Any] = {"cell": cell, "dtype": dtype, "hidden": hidden, "length": length, "batch": args.B}
    for name in steps:
        row[f"{name}_ms"] = med[name] * 1e3
        row[f"{name}_seq_per_s"] = args.B / med[name]
        row[f"{name}_tokens_per_s"] = args.B * length / med[name]
        row[f"{name}_peak_mb"] = memory[name]
    row["time_ratio"] = med["numpy"] / med["torch"]
    if memory["numpy"] is not None and memory["torch"]:
        row["memory_ratio"] = memory["numpy"] / memory["torch"]
    row["max_abs_diff"] = check
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and argv is None:
        # A fixed mmap threshold: glibc then maps every large array and unmaps it when freed, so one grid
        # point's freed memory is not reused (uncounted) by the next. Set before the interpreter starts: re-exec.
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    import numpy as np
    import torch

    print(f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), batch {args.B}")
    header = f"{'cell':5s} {'dtype':8s} {'H':>4s} {'T':>4s} {'numpy ms':>9s} {'torch ms':>9s} {'ratio':>6s} "
    print(header + f"{'numpy MB':>9s} {'torch MB':>9s}", flush=True)
    rows = []
    for cell in args.cells.split(","):
        for dtype in args.dtypes.split(","):
            for hidden in args.hidden:
                for length in args.lengths:
                    r = bench_point(cell, dtype, hidden, length, args)
                    rows.append(r)
                    mb = [f"{v:9.1f}" if v is not None else f"{'n/a':>9s}" for v in (r["numpy_peak_mb"],
                                                                                      r["torch_peak_mb"])]  # fmt: skip
                    print(f"{cell:5s} {dtype:8s} {hidden:4d} {length:4d} {r['numpy_ms']:9.2f} {r['torch_ms']:9.2f} "
                          f"{r['time_ratio']:6.2f} {mb[0]} {mb[1]}", flush=True)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"batch": args.B, "input": args.I, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
