"""NumPy backend against torch's fused nn.RNN / nn.LSTM / nn.GRU: forward + backward of each cell, and batch-1
generation, in one process.

What it measures

* ``GEMM peak``: the median time of a 2048 x 2048 x 2048 matrix product with NumPy (OpenBLAS) and with torch
  (``torch.mm``) in each dtype; the larger of the two rates is "this machine's measured GEMM peak".
* ``cells``: one training step's recurrent work for every cell: zero the gradients, forward over T steps, backward
  from a fixed output gradient, with the gradient of the inputs (as a training step needs it to reach the
  embedding). Both backends start from the same shared initializer (``rnnlab.models.init``); in float64 the
  script first checks that they compute the same outputs and gradients (max abs difference printed). GFLOP/s
  counts the GEMM work only: 3 x 2 T B G H (I + H) per layer and direction (G gates; forward, input gradient,
  weight gradient), which is also the work torch does.
* ``generation``: ``LanguageModelTask.generate`` (what ``rnnlab`` itself uses) from a one-layer char LSTM
  (vocabulary 65, embedding 64, hidden ``--hidden``), microseconds per generated character, both backends.

Each measurement runs in blocks: ``--warmup`` untimed iterations (the first oneDNN LSTM call takes about 1 s),
then ``--iters`` timed ones; the blocks of the two backends alternate ``--rounds`` times and the medians are
taken over the pooled timed iterations of each backend. Ratios are NumPy / torch (below 1: NumPy is faster).

    .venv/bin/python scripts/bench_backends.py
    .venv/bin/python scripts/bench_backends.py --cells lstm --dtypes float32 --rounds 5
    .venv/bin/python scripts/bench_backends.py --layers 2 --bidirectional --skip-generation
    .venv/bin/python scripts/bench_backends.py --json outputs/bench_backends.json

Targets (2-core CPU, T=100, B=64, input 64, hidden 256): NumPy LSTM float32 <= 1.0x torch, GRU and RNN <= 1.1x,
NumPy LSTM >= 50 % of the GEMM peak, batch-1 NumPy generation <= 60 us per character. The Lightning-loop
overhead of the NumPy backend is measured by ``scripts/bench_runner.py --backend numpy``.

Other busy processes distort everything on 2 cores (torch's spinning oneDNN threads most of all): the script
waits for a quiet CPU before it starts and prints the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnlab.atomic import write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))

VOCAB = [chr(c) for c in range(32, 97)]  # 65 characters, tiny-shakespeare's vocabulary size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cells", default="lstm,gru,rnn", help="cells: name[/variant], comma-separated")
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated subset of float32, float64")
    p.add_argument("--seq-len", "-T", type=int, default=100, dest="T")
    p.add_argument("--batch", "-B", type=int, default=64, dest="B")
    p.add_argument("--input", "-I", type=int, default=64, dest="I")
    p.add_argument("--hidden", "-H", type=int, default=256, dest="H")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations at the start of every block (5)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per block (20)")
    p.add_argument("--rounds", type=int, default=3, help="alternating blocks per backend (3)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--gen-length", type=int, default=1000, help="characters per generation (1000)")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--skip-peak", action="store_true", help="do not measure the GEMM peak (no %% column)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    from rnnlab.registry import CELLS

    known = [n if v == "standard" else f"{n}/{v}" for n in CELLS.names() for v in CELLS.variants(n)]
    if not set(args.cells) <= set(known) or not args.cells:
        p.error(f"--cells: choose from {', '.join(known)}")
    if not set(args.dtypes) <= {"float32", "float64"} or not args.dtypes:
        p.error("--dtypes: choose from float32, float64")
    if min(args.T, args.B, args.I, args.H, args.layers, args.iters, args.rounds) < 1 or args.warmup < 0:
        p.error("sizes, --iters and --rounds must be >= 1, --warmup >= 0")
    return args


# ----------------------------------------------------------------------------------------------- timing
def block(fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
    """``warmup`` untimed calls, then the seconds of each of ``iters`` timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def alternate(fns: dict[str, Callable[[], Any]], args: argparse.Namespace) -> dict[str, float]:
    """Blocks of each function in turn, ``args.rounds`` times; the median seconds of each over its pooled calls."""
    pooled: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            pooled[name] += block(fn, args.warmup, args.iters)
    return {name: statistics.median(ts) for name, ts in pooled.items()}


# ------------------------------------------------------------------------------------------------- peak
def gemm_peak(dtype: str, args: argparse.Namespace) -> dict[str, float]:
    """GFLOP/s of a 2048^3 product, NumPy and torch."""
    import numpy as np
    import torch

    n = 2048
    rng = np.random.default_rng(args.seed)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    tc = torch.empty((n, n), dtype=ta.dtype)
    flops = 2.0 * n**3
    runs = argparse.Namespace(**{**vars(args), "warmup": 2, "iters": 7, "rounds": 1})
    med = alternate({"numpy": lambda: np.matmul(a, b, out=c), "torch": lambda: torch.mm(ta, tb, out=tc)}, runs)
    return {k: flops / v / 1e9 for k, v in med.items()}


# ------------------------------------------------------------------------------------------------ cells
def cell_flops(cell: str, args: argparse.Namespace) -> float:
    """GEMM flops of forward + backward (input and weight gradients): 3 x 2 T B G H (in + H) per layer/direction."""
    from rnnlab.cells.protocol import cell_class

    gates = cell_class(*cell.split("/")).gates
    directions = 2 if args.bidirectional else 1
    total = 0.0
    for layer in range(args.layers):
        width = args.I if layer == 0 else args.H * directions
        total += directions * 2.0 * args.T * args.B * gates * args.H * (width + args.H)
    return 3.0 * total


def build_pair(cell: str, dtype: str, args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The NumPy network and the cell's torch module (nn.RNN/LSTM/GRU, or the reference module of a cell torch has no
    fused kernel for) with the same initial weights, inputs and output gradient."""
    import numpy as np
    import torch

    from rnnlab.models.numpy.net import NumpyRecurrentNet
    from rnnlab.models.spec import NetSpec
    from rnnlab.models.torch.recurrent import TorchRecurrentNet

    name, _, variant = cell.partition("/")
    spec = NetSpec(
        cell=name,
        variant=variant or "standard",
        vocab_size=2,
        embed_dim=args.I,  # forward_features feeds [B, T, I] floats straight into the recurrent stack
        hidden_size=args.H,
        num_layers=args.layers,
        bidirectional=args.bidirectional,
        num_outputs=2,
    )
    numpy_net = NumpyRecurrentNet(spec, args.seed, np.dtype(dtype))
    torch_net = TorchRecurrentNet(spec, args.seed).to(getattr(torch, dtype))
    torch_net.load_arrays(numpy_net.params)  # the float64 draws, not their float32 roundings, in float64
    rnn = torch_net.rnn
    rnn.train()
    rng = np.random.default_rng(args.seed + 1)
    x = rng.standard_normal((args.B, args.T, args.I)).astype(dtype)
    g = rng.standard_normal((args.B, args.T, spec.features)).astype(dtype)
    return numpy_net, rnn, x, g


def parity(numpy_net: Any, rnn: Any, x: Any, g: Any) -> float:
    """Max abs difference of outputs, input gradients and parameter gradients between the two backends."""
    import numpy as np
    import torch

    numpy_net.zero_grad()
    out, _, cache = numpy_net.forward_features(x, train=True)
    dx, _ = numpy_net.backward_features(g, None, cache)
    rnn.zero_grad(set_to_none=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    out_t, _ = rnn(xt)
    out_t.backward(torch.from_numpy(g))
    diffs = [np.abs(out - out_t.detach().numpy()).max(), np.abs(dx - xt.grad.numpy()).max()]
    for name, p in rnn.named_parameters():
        diffs.append(np.abs(numpy_net.grads[f"rnn.{name}"] - p.grad.numpy()).max())
    return float(max(diffs))


def training_steps(
    cell: str, dtype: str, args: argparse.Namespace, check: bool = True
) -> tuple[dict[str, Callable[[], None]], Any]:
    """({"numpy": step, "torch": step}, max abs difference in float64 or None): one forward and backward of the
    layer on each backend, from the same weights and inputs (``check``: compare them first, in float64)."""
    import torch

    numpy_net, rnn, x, g = build_pair(cell, dtype, args)
    difference = parity(numpy_net, rnn, x, g) if check and dtype == "float64" else None
    xt, gt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(g)

    def numpy_step() -> None:
        numpy_net.zero_grad()
        _, _, cache = numpy_net.forward_features(x, train=True)
        numpy_net.backward_features(g, None, cache)

    def torch_step() -> None:
        rnn.zero_grad(set_to_none=True)
        xt.grad = None
        out, _ = rnn(xt)
        out.backward(gt)

    return {"numpy": numpy_step, "torch": torch_step}, difference


def bench_cell(cell: str, dtype: str, args: argparse.Namespace) -> dict[str, Any]:
    steps, check = training_steps(cell, dtype, args)
    med = alternate(steps, args)
    flops = cell_flops(cell, args)
    return {
        "cell": cell,
        "dtype": dtype,
        "numpy_ms": med["numpy"] * 1e3,
        "torch_ms": med["torch"] * 1e3,
        "ratio": med["numpy"] / med["torch"],
        "numpy_gflops": flops / med["numpy"] / 1e9,
        "torch_gflops": flops / med["torch"] / 1e9,
        "max_abs_diff": check,
    }


# ------------------------------------------------------------------------------------------- generation
def bench_generation(args: argparse.Namespace) -> dict[str, Any]:
    """Microseconds per character of ``LanguageModelTask.generate`` on both backends (batch 1, float32)."""
    from rnnlab.models.spec import NetSpec
    from rnnlab.tasks.language_model import LanguageModelTask

    spec = NetSpec("lstm", len(VOCAB), 64, args.H, 1, False, len(VOCAB))
    common = dict(
        spec=spec.to_dict(),
        optimizer={"name": "adam", "lr": 1e-3},
        task={"name": "language_model", "sample_length": 0, "temperature": 0.8, "top_k": None},
        vocab=VOCAB,
        seed=args.seed,
    )
    tasks = {b: LanguageModelTask(**common, backend=b) for b in ("numpy", "torch")}
    samples = {b: t.generate("ROMEO:", 200, temperature=0.8, seed=1) for b, t in tasks.items()}
    n = args.gen_length
    runs = argparse.Namespace(**{**vars(args), "warmup": 1, "iters": 3})
    med = alternate({b: (lambda t=t: t.generate("ROMEO:", n, temperature=0.8, seed=1)) for b, t in tasks.items()}, runs)
    return {
        "hidden": args.H,
        "length": n,
        "numpy_us_per_char": med["numpy"] / n * 1e6,
        "torch_us_per_char": med["torch"] / n * 1e6,
        "same_text": samples["numpy"] == samples["torch"],
    }


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from bench_runner import loadavg, wait_until_quiet

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    other = wait_until_quiet(0.25, 60.0)
    print(
        f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"python {platform.python_version()}, cpus {os.cpu_count()}, load average {loadavg()}"
        + (f", other processes {other:.2f} cores" if other is not None else ""),
        flush=True,
    )
    shape = "bidirectional " if args.bidirectional else ""
    print(
        f"T={args.T} B={args.B} input={args.I} hidden={args.H} layers={args.layers} {shape}| "
        f"{args.warmup} warm-up + {args.iters} timed iterations per block, {args.rounds} rounds; "
        "medians of the pooled timed iterations",
        flush=True,
    )
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "json"}, "peak": {}, "cells": []}
    if not args.skip_peak:
        for dtype in args.dtypes:
            peak = gemm_peak(dtype, args)
            results["peak"][dtype] = {**peak, "peak": max(peak.values())}
            rates = f"numpy {peak['numpy']:.0f} GFLOP/s, torch {peak['torch']:.0f} GFLOP/s"
            print(f"GEMM peak {dtype}: {rates}", flush=True)

    print()
    w = max(5, *(len(c) for c in args.cells))
    header = (
        f"{'cell':<{w}} {'dtype':<8} {'numpy ms':>9} {'torch ms':>9} {'ratio':>6} {'numpy GF/s':>10} "
        f"{'torch GF/s':>10} {'numpy %pk':>9} {'torch %pk':>9} {'max|diff|':>9}"
    )
    print(header)
    print("-" * len(header))
    for dtype in args.dtypes:
        for cell in args.cells:
            r = bench_cell(cell, dtype, args)
            peak = results["peak"].get(dtype, {}).get("peak")
            r["numpy_peak_fraction"] = r["numpy_gflops"] / peak if peak else None
            r["torch_peak_fraction"] = r["torch_gflops"] / peak if peak else None
            results["cells"].append(r)
            pct = f"{r['numpy_peak_fraction']:>9.0%} {r['torch_peak_fraction']:>9.0%}" if peak else f"{'':>9} {'':>9}"
            diff = f"{r['max_abs_diff']:>9.1e}" if r["max_abs_diff"] is not None else f"{'':>9}"
            print(
                f"{cell:<{w}} {dtype:<8} {r['numpy_ms']:>9.1f} {r['torch_ms']:>9.1f} {r['ratio']:>6.2f} "
                f"{r['numpy_gflops']:>10.0f} {r['torch_gflops']:>10.0f} {pct} {diff}",
                flush=True,
            )
    if not args.skip_generation:
        gen = bench_generation(args)
        results["generation"] = gen
        print()
        print(
            f"batch-1 generation (char LSTM, hidden {gen['hidden']}, {gen['length']} chars, float32): "
            f"numpy {gen['numpy_us_per_char']:.1f} us/char, torch {gen['torch_us_per_char']:.1f} us/char "
            f"(ratio {gen['numpy_us_per_char'] / gen['torch_us_per_char']:.2f}); "
            f"same sampled text from both: {gen['same_text']}",
            flush=True,
        )
    print(f"\nload average after: {loadavg()}")
    if args.json is not None:
        write_text(args.json, json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
