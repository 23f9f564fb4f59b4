"""Every registered cell variant: the NumPy cell against its torch reference cell (eager, scripted), per training step.

What it measures

For each cell and variant of ``rnnlab.registry.CELLS`` (or those given with ``--cells``), one training step of one
recurrent layer, float32: forward over T steps from zero states, then backward of the scalar loss
L = sum(out ⊙ G) for a fixed random G [B, T, H] (both sides get dL/dout = G), down to every parameter's gradient
and the inputs' gradient dx (a training step needs it to reach the embedding). Defaults: T=100, B=64, input 256,
hidden 256. All backends start from the same weights (``rnnlab.models.init``, the float64 draws rounded to
float32) and the same inputs.

* ``numpy``: ``NumpyRecurrentNet.forward_features`` / ``backward_features`` (the recurrent stack: the input side as
  one GEMM, then the cell's own ``forward`` / ``backward``), as ``scripts/bench_backends.py`` times it.
* ``eager``: ``ReferenceRecurrent`` (rnnlab/models/torch/reference.py) running the cell's ``torch_step`` with plain
  torch operations, autograd for the backward: the oracle the tests hold the NumPy cell to.
* ``compiled``: the same module with its per-step function ``torch_step`` passed through ``torch.compile``
  (inductor; forward and backward kernels of one step each fused by AOTAutograd): the loop over time stays in
  Python, as in the eager module. ``--compile-scope module`` compiles the whole module instead (the T steps
  unrolled into one graph: minutes of compile time per cell on 2 cores). Compile time is reported apart (the first
  two steps: forward + backward compiled, then the recompile for a state that requires grad) and excluded.
* ``script``: TorchScript, ``torch.jit.trace`` of the same per-step function (``--no-script`` skips it), warmed up
  so that the profiling executor has specialised and fused it.
* ``fused``: for the ``standard`` cells only, torch's own nn.RNN / nn.LSTM / nn.GRU (oneDNN), the bar the fused
  kernels set; the other variants have no fused kernel, which is why this script exists.

Timing: every function is called ``--warmup`` times first (untimed), then the backends of one cell are called in
turn, one training step each (A B C D A B C D ...), ``--repeats`` times; the table shows the medians. Ratios:
``numpy / scripted`` is the NumPy step over the faster of torch.compile and TorchScript (below 1: NumPy faster);
``numpy / standard`` is the NumPy step over NumPy's own ``standard`` step of the same cell (LSTM variants over the
standard LSTM, GRU forms over the standard GRU), which is timed in the same rounds for that purpose. ``max rel diff``
checks that all backends compute the same step: the largest max |a - b| / max |a| of the output, dx and every
parameter gradient of a torch backend against NumPy's (float32).

Threads: ``--threads N`` (default 2) sets both torch's intra-op threads and the BLAS / OpenMP pools NumPy uses
(threadpoolctl), so the two backends run on the same number of cores; inductor's kernels take torch's count when
they are compiled. The script waits up to ``--max-wait`` seconds for a quiet CPU first, and reports the load average
and the CPU time other processes used while each cell was timed (``other`` column, in cores): on a 2-core machine
any neighbour distorts the torch numbers most (its OpenMP threads spin).

    .venv/bin/python scripts/bench_cells.py
    .venv/bin/python scripts/bench_cells.py --cells lstm,lstm/peephole --repeats 30 --out /tmp/cells.md
    .venv/bin/python scripts/bench_cells.py --compile-scope module --cells lstm/peephole

Targets (issue: speed of the variants without a fused torch kernel): every NumPy variant at least as fast as the
scripted torch reference cell (``numpy / scripted`` <= 1), the peephole LSTM within 1.3x of NumPy's standard LSTM.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

from rnnlab.atomic import write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))

BACKENDS = ("numpy", "eager", "compiled", "script", "fused")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cells", default="", help="cells: name[/variant], comma-separated (default: every registered one)")
    p.add_argument("--seq-len", "-T", type=int, default=100, dest="T")
    p.add_argument("--batch", "-B", type=int, default=64, dest="B")
    p.add_argument("--input", "-I", type=int, default=256, dest="I")
    p.add_argument("--hidden", "-H", type=int, default=256, dest="H")
    p.add_argument("--threads", type=int, default=2, help="torch and BLAS/OpenMP threads, the same for both (2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of every function first (3)")
    p.add_argument("--repeats", type=int, default=15, help="timed calls of every function, interleaved (15)")
    p.add_argument("--compile-scope", choices=("step", "module", "none"), default="step",
                   help="torch.compile the per-step function (default), the whole module, or nothing")  # fmt: skip
    p.add_argument("--no-script", action="store_true", help="skip TorchScript (torch.jit.trace of the step)")
    p.add_argument("--max-wait", type=float, default=60.0, help="seconds to wait for a quiet CPU first (60)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table (and conditions) here")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from rnnlab.registry import CELLS

    known = [n if v == "standard" else f"{n}/{v}" for n in CELLS.names() for v in CELLS.variants(n)]
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()] or known
    unknown = [c for c in args.cells if c not in known]
    if unknown:
        p.error(f"--cells: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    if min(args.T, args.B, args.I, args.H, args.threads, args.repeats) < 1 or args.warmup < 0:
        p.error("sizes, --threads and --repeats must be >= 1, --warmup >= 0")
    return args


# ----------------------------------------------------------------------------------------------- set-up
class StepCell:
    """A cell whose ``torch_step`` is replaced (compiled or traced); everything else is the cell's own."""

    def __init__(self, cell: Any, torch_step: Callable[..., Any]):
        self._cell = cell
        self.torch_step = torch_step

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cell, name)


def traced_step(cell: Any, names: list[str], params: dict[str, Any], B: int) -> Callable[..., Any]:
    """``cell.torch_step`` through torch.jit.trace, called as the reference module calls ``torch_step``."""
    import torch

    H = cell.hidden_size

    def step(x_side: Any, state: tuple[Any, ...], ps: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(cell.torch_step(x_side, state, dict(zip(names, ps, strict=True))))

    example = (
        torch.randn(B, cell.gates * H),
        tuple(torch.randn(B, H, requires_grad=True) for _ in cell.states),
        tuple(params[n] for n in names),
    )
    traced = torch.jit.trace(step, example, check_trace=False)

    def call(x_side: Any, state: tuple[Any, ...], p: dict[str, Any]) -> tuple[Any, ...]:
        return traced(x_side, tuple(state), tuple(p[n] for n in names))

    return call


def reference(cell: Any, arrays: dict[str, Any], input_size: int) -> Any:
    """ReferenceRecurrent of ``cell`` (1 layer, 1 direction) holding ``arrays`` (``rnn.``-prefixed) in float32."""
    import torch

    from rnnlab.models.torch.reference import ReferenceRecurrent

    module = ReferenceRecurrent(cell, input_size, 1, False, 0.0)
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(torch.as_tensor(arrays[f"rnn.{name}"], dtype=torch.float32))
    return module.train()


def build(cell_key: str, args: argparse.Namespace) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    """({backend: one training step}, {backend: compile seconds}) for one cell, every backend from the same
    weights, inputs and output gradient."""
    import numpy as np
    import torch

    from rnnlab.cells.protocol import cell_class
    from rnnlab.models.numpy.net import NumpyRecurrentNet
    from rnnlab.models.spec import NetSpec
    from rnnlab.models.torch.recurrent import TorchRecurrentNet

    name, _, variant = cell_key.partition("/")
    variant = variant or "standard"
    spec = NetSpec(
        cell=name,
        variant=variant,
        vocab_size=2,
        embed_dim=args.I,  # forward_features feeds [B, T, I] floats straight into the recurrent stack
        hidden_size=args.H,
        num_layers=1,
        bidirectional=False,
        num_outputs=2,
    )
    net = NumpyRecurrentNet(spec, args.seed, np.float32)
    draws = net.params  # the initializer's float64 draws rounded to float32: the torch modules copy them
    cell = cell_class(name, variant).from_spec(spec)
    rng = np.random.default_rng(args.seed + 1)
    x = rng.standard_normal((args.B, args.T, args.I)).astype(np.float32)
    g = rng.standard_normal((args.B, args.T, args.H)).astype(np.float32)
    xt, gt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(g)

    def numpy_step(net: Any) -> Callable[[], Any]:
        def run() -> Any:
            net.zero_grad()
            out, _, cache = net.forward_features(x, train=True)
            dx, _ = net.backward_features(g, None, cache)
            return out, dx, net.grads

        return run

    def torch_step(module: Any) -> Callable[[], Any]:
        def run() -> Any:
            module.zero_grad(set_to_none=True)
            xt.grad = None
            out, _ = module(xt)
            out.backward(gt)  # the gradient of sum(out ⊙ G)
            return out, xt.grad, module

        return run

    steps: dict[str, Callable[[], Any]] = {"numpy": numpy_step(net)}
    if variant != "standard":  # NumPy's standard cell of the same name, timed in the same rounds (the ratio)
        standard = NumpyRecurrentNet(replace(spec, variant="standard"), args.seed, np.float32)
        steps["numpy_standard"] = numpy_step(standard)
    compile_s: dict[str, float] = {}
    eager = reference(cell, draws, args.I)
    steps["eager"] = torch_step(eager)
    if args.compile_scope != "none":
        torch._dynamo.reset()
        if args.compile_scope == "step":
            compiled = reference(StepCell(cell, torch.compile(cell.torch_step, dynamic=False)), draws, args.I)
            run = torch_step(compiled)
        else:
            module = reference(cell, draws, args.I)
            run = torch_step(torch.compile(module, dynamic=False))
        t0 = time.perf_counter()
        run()
        run()
        compile_s["compiled"] = time.perf_counter() - t0
        steps["compiled"] = run
    if not args.no_script:
        ps = dict(eager.layer_params(0, 0))
        t0 = time.perf_counter()
        scripted = reference(StepCell(cell, traced_step(cell, eager.base_names, ps, args.B)), draws, args.I)
        run = torch_step(scripted)
        run()
        run()
        compile_s["script"] = time.perf_counter() - t0
        steps["script"] = run
    if variant == "standard":
        torch_net = TorchRecurrentNet(spec, args.seed).to(torch.float32)
        torch_net.load_arrays(draws)
        steps["fused"] = torch_step(torch_net.rnn.train())
    return steps, compile_s


def max_difference(results: dict[str, Any]) -> dict[str, float]:
    """Largest relative difference (max |a - b| / max |a|) of each torch backend's output, dx and parameter gradients
    from NumPy's (float32): a check that every backend computes the same step."""
    import numpy as np

    def rel(a: Any, b: Any) -> float:
        return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))

    out, dx, grads = results["numpy"]
    diffs = {}
    for backend, (out_t, dx_t, module) in results.items():
        if backend.startswith("numpy"):
            continue
        d = [rel(out, out_t.detach().numpy()), rel(dx, dx_t.numpy())]
        d += [rel(grads[f"rnn.{pname}"], param.grad.numpy()) for pname, param in module.named_parameters()]
        diffs[backend] = max(d)
    return diffs


# ----------------------------------------------------------------------------------------------- timing
def interleaved(steps: dict[str, Callable[[], Any]], args: argparse.Namespace) -> dict[str, float]:
    """Warm-up, then one call of each in turn, ``args.repeats`` times: {backend: median seconds}."""
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_cell(cell_key: str, args: argparse.Namespace) -> dict[str, Any]:
    from bench_runner import CpuMeter

    steps, compile_s = build(cell_key, args)
    diffs = max_difference({k: fn() for k, fn in steps.items()})
    meter = CpuMeter()
    med = interleaved(steps, args)
    other = meter.foreign_cores()
    name, _, variant = cell_key.partition("/")
    ms = {k: v * 1e3 for k, v in med.items()}
    scripted = [ms[k] for k in ("compiled", "script") if k in ms]
    return {
        "cell": name,
        "variant": variant or "standard",
        "ms": ms,
        "compile_s": compile_s,
        "max_abs_diff": diffs,
        "numpy_over_scripted": ms["numpy"] / min(scripted) if scripted else None,
        "other_cores": other,
    }


# ----------------------------------------------------------------------------------------------- output
def fmt(value: float | None, spec: str = ".1f") -> str:
    return "" if value is None else format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| cell | variant | NumPy ms | torch eager ms | torch.compile ms | TorchScript ms | torch fused ms | "
        "NumPy / scripted | NumPy / NumPy standard | compile s (compile, script) | max rel diff | other cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms, ratio = r["ms"], r["numpy_over_scripted"]
        own = ms["numpy"] / ms["numpy_standard"] if "numpy_standard" in ms else None
        comp = ", ".join(f"{r['compile_s'][k]:.1f}" if k in r["compile_s"] else "-" for k in ("compiled", "script"))
        cells = [
            r["cell"],
            r["variant"],
            fmt(ms["numpy"]),
            fmt(ms.get("eager")),
            fmt(ms.get("compiled")),
            fmt(ms.get("script")),
            fmt(ms.get("fused")),
            f"**{ratio:.2f}**" if ratio is not None else "",
            fmt(own, ".2f"),
            comp,
            fmt(max(r["max_abs_diff"].values(), default=None), ".1e"),
            fmt(r["other_cores"], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from bench_runner import loadavg, wait_until_quiet
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    limits = threadpool_limits(args.threads)  # OpenBLAS (NumPy) and the OpenMP pools, kept for the whole run
    other = wait_until_quiet(0.25, args.max_wait)
    header = (
        f"numpy {np.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
        f"cpus {os.cpu_count()}, threads {args.threads} (torch and BLAS), load average {loadavg()}"
        + (f", other processes {other:.2f} cores at the start" if other is not None else "")
    )
    shape = (
        f"T={args.T} B={args.B} input={args.I} hidden={args.H}, 1 layer, float32; {args.warmup} warm-up calls, "
        f"then {args.repeats} interleaved calls of each backend; medians; compile scope: {args.compile_scope}"
    )
    print(header, shape, sep="\n", flush=True)
    rows = []
    for cell_key in args.cells:
        r = bench_cell(cell_key, args)
        rows.append(r)
        parts = ", ".join(f"{k} {v:.1f}" for k, v in r["ms"].items())
        print(f"  {cell_key}: {parts} ms (other processes {fmt(r['other_cores'], '.2f')} cores)", flush=True)
    text = table(rows)
    print()
    print(text)
    after = f"load average after: {loadavg()}"
    print(f"\n{after}")
    del limits
    if args.out is not None:
        write_text(args.out, f"{header}\n{shape}\n\n{text}\n\n{after}\n")
        print(f"wrote {args.out}")
    if args.json is not None:
        keep = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        write_text(args.json, json.dumps({"args": keep, "header": header, "cells": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
