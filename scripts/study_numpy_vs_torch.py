"""The NumPy-vs-PyTorch comparison study: run every part, then write experiments/numpy_vs_torch/.

    bash scripts/reproduce_comparison.sh                  # set up .venv, run everything, write the report
    .venv/bin/python scripts/study_numpy_vs_torch.py      # the same, in an existing environment
    .venv/bin/python scripts/study_numpy_vs_torch.py --stages report       # rewrite the report from earlier runs
    .venv/bin/python scripts/study_numpy_vs_torch.py --quick --out /tmp/s  # a tiny version (minutes; for tests)

Parts (each a stage; the runs go to ``--work``, default outputs/study_numpy_vs_torch/, git-ignored):

1. ``original``: the seed study's setting (conf/experiment/study_original.yaml): synthetic_text, 10,000 samples,
   80/20 split, 20 epochs, a one-layer RNN; NumPy with SGD against PyTorch with Adam. Train accuracy is scored
   over the whole training split with the checkpoint the test split was scored with.
2. ``controlled``: conf/experiment/study_controlled.yaml: rnn/lstm/gru x 1-2 layers x uni/bi x SGD/Adam, both
   backends, float64, same initial weights and data order; the curves are compared step by step. The sweep runs
   twice, with the default thread count and with ``threads=1``: the noise floor against which "equal" is judged.
   ``noise``: the Adagrad example of rounding amplified by an adaptive optimizer (two thread counts per backend,
   with and without an initial accumulator).
3. ``speed``: scripts/bench_grid.py (LSTM over hidden {64,128,256,512} x length {50,100,200} x float32/float64,
   every cell at 256 x 100: timed with the default allocator in one process, memory in fresh processes) and the
   batch-1 generation of scripts/bench_backends.py; the report adds the median step of real rnnlab-train runs.
4. ``vanishing``: experiment=vanishing_gradient at lengths 10 and 50, with the gradient-through-time picture.
5. ``char_lm``: the default character LSTM on Shakespeare for one epoch on both backends; bpc, curves, samples.
6. ``report``: reads everything back (rnnlab.report) and writes ``--out`` (default experiments/numpy_vs_torch/)
   atomically: README.md, figures, the generic rnnlab-report of the controlled sweep.

Every run is seeded (seed 42, fixed data generators), so the accuracy and loss numbers repeat exactly from run to
run; the timings are medians after warm-up and vary with the machine's load.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rnnlab.atomic import write_text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
STAGES = ("original", "controlled", "noise", "speed", "vanishing", "char_lm", "report")
APART = 1e-6  # a logged loss difference above this counts as two trajectories that have separated
BIN = Path(sys.executable).parent
SEED = 42


# ------------------------------------------------------------------------------------------------- running
def run(cmd: list[str], log: Path) -> None:
    """Run a command with its output in ``log``; a failure stops the study with the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    t0 = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    print(f"  {time.perf_counter() - t0:6.1f} s  {' '.join(cmd[1:])[:150]}", flush=True)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"study: command failed (exit {done.returncode}), log {log}:\n{tail}")


def train(args: list[str], log: Path) -> None:
    run([str(BIN / "rnnlab-train"), *args], log)


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def stage_original(work: Path, quick: bool) -> None:
    base = fresh(work / "original")
    extra = ["trainer.max_epochs=2", "data.num_samples=1000"] if quick else []
    for name, backend, optimizer, lr in (
        ("numpy_sgd", "numpy", "sgd", 0.1),
        ("torch_adam", "torch", "adam", 0.005),
        ("numpy_adam", "numpy", "adam", 0.005),
    ):
        train(["experiment=study_original", f"model.backend={backend}", f"optimizer={optimizer}",
               f"optimizer.lr={lr}", f"seed={SEED}", "trainer.enable_progress_bar=false", *extra,
               f"hydra.run.dir={base / name}"], base / f"{name}.log")  # fmt: skip


def stage_controlled(work: Path, quick: bool) -> None:
    """The controlled sweep twice: with the libraries' default thread counts (both cores), and with one thread
    (``threads=1``): the second is the noise floor, the same computation summed in another order."""
    extra = ["data.num_samples=400", "trainer.max_epochs=1", "model=rnn,gru", "model.num_layers=1"] if quick else []
    # one thread per job: the second sweep runs two jobs at a time on the 2 cores (its timings are not reported)
    parallel = ["threads=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    for name, threads in (("controlled", []), ("controlled_1thread", parallel)):
        base = work / name
        if base.exists():
            shutil.rmtree(base)
        train(["experiment=study_controlled", f"seed={SEED}", *threads, *extra, f"hydra.sweep.dir={base}"],
              work / f"{name}.log")  # fmt: skip


# The example of rounding amplified by an adaptive optimizer: a 2-layer bidirectional RNN classifier, float64,
# Adagrad, seed 11; two thread counts on each backend, without and with an initial accumulator.
NOISE = ["task=classify", "data=synthetic_text", "data.num_samples=4000", "model=rnn", "model.hidden_size=32",
         "model.embed_dim=0", "model.num_layers=2", "model.bidirectional=true", "optimizer=adagrad", "seed=11",
         "trainer.precision=64", "trainer.max_steps=40", "trainer.log_every_n_steps=1", "logger=csv",
         "trainer.enable_progress_bar=false", "print_sample=false"]  # fmt: skip


def stage_noise(work: Path, quick: bool) -> None:
    base = work / "noise"
    if base.exists():
        shutil.rmtree(base)
    extra = ["data.num_samples=400", "trainer.max_steps=12"] if quick else []
    train(["-m", *NOISE, "optimizer.initial_accumulator_value=0,0.1", "model.backend=torch,numpy", "threads=2,1",
           *extra, f"hydra.sweep.dir={base}", "hydra.sweep.subdir=acc${optimizer.initial_accumulator_value}_"
           "${model.backend}_${threads}"], work / "noise.log")  # fmt: skip


def stage_speed(work: Path, quick: bool) -> None:
    base = fresh(work / "speed")
    short = ["--iters", "2", "--rounds", "1"] if quick else ["--warmup", "3", "--iters", "4"]
    # hidden 64..512 x T 50, 100; memory (a fresh process per backend and point) at T = 100
    grid = ["--hidden", "64,128", "--lengths", "20"] if quick else ["--lengths", "50,100", "--memory-lengths", "100"]
    cells = ["--hidden", "64", "--lengths", "20"] if quick else ["--hidden", "256", "--lengths", "100"]
    py = sys.executable
    run([py, "scripts/bench_grid.py", "--cells", "lstm", *grid, *short, "--json", str(base / "grid.json")],
        base / "grid.log")  # fmt: skip
    run([py, "scripts/bench_grid.py", "--cells", "rnn,lstm,gru", *cells, *short, "--json", str(base / "cells.json")],
        base / "cells.log")  # fmt: skip
    gen = ["--gen-length", "200"] if quick else []
    run([py, "scripts/bench_backends.py", "--cells", "lstm", "--dtypes", "float32", "--iters", "2", "--rounds", "1",
         "--skip-peak", *gen, "--json", str(base / "generation.json")], base / "generation.log")  # fmt: skip


def stage_vanishing(work: Path, quick: bool) -> None:
    base = work / "vanishing"
    if base.exists():
        shutil.rmtree(base)
    lengths = "10,20" if quick else "10,50"
    extra = ["data.num_train=640", "trainer.max_epochs=1"] if quick else []
    parallel = ["threads=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]  # two jobs at a time, one thread each
    train(["experiment=vanishing_gradient", f"data.length={lengths}", f"seed={SEED}", *parallel,
           "trainer.enable_progress_bar=false", *extra, f"hydra.sweep.dir={base}"], work / "vanishing.log")  # fmt: skip


def stage_char_lm(work: Path, quick: bool) -> None:
    base = work / "char_lm"
    if base.exists():
        shutil.rmtree(base)
    extra = ["trainer.max_steps=30", "trainer.limit_val_batches=5"] if quick else []
    train(["-m", "model.backend=torch,numpy", "trainer.max_epochs=1", "trainer.val_check_interval=0.25",
           f"seed={SEED}", "trainer.enable_progress_bar=false", "print_sample=false", *extra,
           f"hydra.sweep.dir={base}"], work / "char_lm.log")  # fmt: skip


# ------------------------------------------------------------------------------------------------- reading
def jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if (p / "summary.json").is_file()), key=lambda p: p.name)


def summary(job: Path) -> dict[str, Any]:
    return json.loads((job / "summary.json").read_text())


def csv(job: Path) -> Any:
    import pandas as pd

    return pd.read_csv(job / "csv" / "metrics.csv")


def best_checkpoint(job: Path) -> Path:
    """The best validation checkpoint, or last.ckpt where the run never validated inside fit."""
    best = sorted((job / "checkpoints").glob("best-*.ckpt"))
    return best[-1] if best else job / "checkpoints" / "last.ckpt"


def split_accuracy(job: Path, split: str) -> float:
    """Accuracy of the checkpoint the test split was scored with (the best validation) over a whole split."""
    import torch
    from omegaconf import OmegaConf

    from rnnlab.data.datamodules import build_datamodule
    from rnnlab.tasks.classify import ClassifyTask

    cfg = OmegaConf.load(job / "config_resolved.yaml")
    ckpt = best_checkpoint(job)
    dm = build_datamodule(cfg.data, int(summary(job)["seed"]), cfg.paths.cache_dir)
    dm.prepare_data()
    dm.setup("fit")
    task = ClassifyTask.load_from_checkpoint(ckpt, map_location="cpu")
    task.eval()
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader}[split]()
    correct = total = 0
    with torch.no_grad():
        for x, lengths, y in loader:
            correct += int((task(x, lengths).argmax(-1) == y).sum())
            total += len(y)
    return correct / total


def code_lines(path: Path) -> int:
    """Lines of code: not blank, not a comment, not part of a docstring."""
    source = path.read_text()
    doc_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    count = 0
    for i, line in enumerate(source.splitlines(), start=1):
        text = line.strip()
        if text and not text.startswith("#") and i not in doc_lines:
            count += 1
    return count


# ------------------------------------------------------------------------------------------------- figures
def save(fig: Any, path: Path) -> str:
    fig.savefig(path, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def curve(frame: Any, tag: str) -> Any:
    values = frame[["step", tag]].dropna() if tag in frame else frame.iloc[0:0][["step"]]
    return values.groupby("step")[tag].last() if len(values) else values


COLOURS = {"torch": "tab:orange", "numpy": "tab:blue"}


def fig_original(runs: list[dict[str, Any]], out: Path) -> str:
    from rnnlab.plots import new_figure

    fig = new_figure(10, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    for r in runs:
        acc = curve(r["csv"], "val/acc")
        ax1.plot(acc.index, acc.values, color=COLOURS[r["backend"]], label=r["label"])
        loss = curve(r["csv"], "train/loss")
        ax2.plot(loss.index, loss.rolling(10, min_periods=1).mean().values, color=COLOURS[r["backend"]],
                 label=r["label"])  # fmt: skip
    ax1.set_xlabel("step")
    ax1.set_ylabel("validation accuracy")
    ax1.set_title("the original setting: validation accuracy")
    ax2.set_xlabel("step")
    ax2.set_ylabel("training loss (mean of 10 logs)")
    ax2.set_title("training loss")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, out / "original_curves.png")


def _grid(pairs: list[dict[str, Any]], optimizer: str) -> tuple[Any, Any, list[dict[str, Any]], Any, Any]:
    from rnnlab.plots import new_figure

    chosen = [p for p in pairs if p["optimizer"] == optimizer]
    cols = sorted({(p["layers"], p["directions"]) for p in chosen})
    cells = [c for c in ("rnn", "lstm", "gru") if any(p["cell"] == c for p in chosen)]
    fig = new_figure(3.0 * len(cols) + 1, 2.4 * len(cells) + 0.6)
    axes = fig.subplots(len(cells), len(cols), squeeze=False, sharex=True)
    where = {id(p): axes[cells.index(p["cell"])][cols.index((p["layers"], p["directions"]))] for p in chosen}
    return fig, axes, chosen, where, cells


def _finish_grid(fig: Any, axes: Any, ylabel: str, title: str, legend_size: int, path: Path) -> str:
    """The legend, the axis labels and the title of a :func:`_grid` figure; saves it."""
    axes[0][0].legend(fontsize=legend_size)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for row in axes:
        row[0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def fig_controlled(pairs: list[dict[str, Any]], optimizer: str, out: Path) -> str:
    """Per pair: the training loss at every step, torch (solid) and numpy (dashed)."""
    fig, axes, chosen, where, _ = _grid(pairs, optimizer)
    for p in chosen:
        ax = where[id(p)]
        for backend, style in (("torch", "-"), ("numpy", "--")):
            c = curve(p[f"csv_{backend}"], "train/loss")
            ax.plot(c.index, c.values, style, color=COLOURS[backend], label=backend,
                    lw=1.6 if backend == "torch" else 1.0)  # fmt: skip
        ax.set_title(_name(p)[len(optimizer) + 1 :], fontsize=9)
        ax.grid(alpha=0.3)
    title = f"controlled setting, {optimizer}: training loss at every step, torch (solid), numpy (dashed)"
    return _finish_grid(fig, axes, "train/loss", title, 8, out / f"controlled_{optimizer}.png")


FLOOR = 1e-17  # where an exact zero difference is drawn on a log scale


def fig_noise_floor(pairs: list[dict[str, Any]], optimizer: str, out: Path, threads: int) -> str:
    """Per pair: |Δ train/loss| at every step, numpy vs torch against the noise floor (each backend with another
    thread count)."""
    import numpy as np

    fig, axes, chosen, where, _ = _grid(pairs, optimizer)
    series = (("backends", "numpy vs torch", "black", "-"),
              ("threads_torch", f"torch {threads} vs 1 thread", COLOURS["torch"], "--"),
              ("threads_numpy", f"numpy {threads} vs 1 thread", COLOURS["numpy"], ":"))  # fmt: skip
    for p in chosen:
        ax = where[id(p)]
        for key, label, colour, style in series:
            gaps = p.get(key)
            if gaps is None or not len(gaps):
                continue
            ax.semilogy(gaps.index, np.maximum(gaps.to_numpy(), FLOOR), style, color=colour, label=label, lw=1.1)
        ax.axhline(APART, color="grey", lw=0.6)
        ax.set_ylim(FLOOR / 3, 10)
        ax.set_title(_name(p)[len(optimizer) + 1 :], fontsize=9)
        ax.grid(alpha=0.3, which="both")
    title = f"controlled setting, {optimizer}: differences of the training loss (1e-17: equal; grey line {APART:g})"
    return _finish_grid(fig, axes, "|Δ train/loss|", title, 7, out / f"noise_floor_{optimizer}.png")


def fig_adagrad(runs: dict[tuple[str, str, int], Any], out: Path) -> str:
    import numpy as np

    from rnnlab.plots import new_figure

    fig = new_figure(10, 3.6)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, acc in zip(axes, sorted({k[0] for k in runs}), strict=False):
        for label, a, b, colour, style in (("torch 2 vs 1 thread", ("torch", 2), ("torch", 1), COLOURS["torch"], "--"),
                                           ("numpy 2 vs 1 thread", ("numpy", 2), ("numpy", 1), COLOURS["numpy"], ":"),
                                           ("numpy vs torch", ("numpy", 2), ("torch", 2), "black", "-")):  # fmt: skip
            if (acc, *a) not in runs or (acc, *b) not in runs:
                continue
            ca, cb = curve(runs[(acc, *a)], "train/loss"), curve(runs[(acc, *b)], "train/loss")
            common = ca.index.intersection(cb.index)
            rel = (ca[common] - cb[common]).abs() / cb[common].abs()
            ax.semilogy(common, np.maximum(rel.to_numpy(), FLOOR), style, color=colour, label=label)
        ax.set_ylim(FLOOR / 3, 10)
        ax.set_title(f"Adagrad, initial accumulator {acc}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("relative |Δ train/loss|")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return save(fig, out / "adagrad_rounding.png")


def fig_speed(grid: list[dict[str, Any]], out: Path) -> str:
    from rnnlab.plots import new_figure

    dtypes = sorted({r["dtype"] for r in grid})
    fig = new_figure(5.0 * len(dtypes), 3.8)
    axes = fig.subplots(1, len(dtypes), squeeze=False)[0]
    for ax, dtype in zip(axes, dtypes, strict=True):
        rows = [r for r in grid if r["dtype"] == dtype]
        for length in sorted({r["length"] for r in rows}):
            pts = sorted((r["hidden"], r["time_ratio"]) for r in rows if r["length"] == length)
            ax.plot([h for h, _ in pts], [v for _, v in pts], marker="o", label=f"T = {length}")
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden size")
        ax.set_ylabel("step time, numpy / torch")
        ax.set_title(f"LSTM training step, {dtype} (below 1: numpy faster)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, out / "speed_ratio.png")


def fig_memory(grid: list[dict[str, Any]], out: Path) -> str:
    from rnnlab.plots import new_figure

    fig = new_figure(10, 6.4)
    axes = fig.subplots(2, 1)
    rows = sorted(grid, key=lambda r: (r["dtype"], r["hidden"], r["length"]))
    x = range(len(rows))
    width = 0.4
    for ax, kind, label in ((axes[0], "alloc", "bytes a step holds allocated (MB)"),
                            (axes[1], "rss", "resident memory the first steps add (MB)")):  # fmt: skip
        for k, backend in enumerate(("numpy", "torch")):
            ax.bar([i + (k - 0.5) * width for i in x], [r.get(f"{backend}_{kind}_mb") or 0 for r in rows], width,
                   color=COLOURS[backend], label=backend)  # fmt: skip
        ax.set_xticks(list(x), [f"{r['dtype'][5:]}\nH{r['hidden']}\nT{r['length']}" for r in rows], fontsize=6)
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_title("LSTM training step, batch 64: memory (fresh process per bar, default allocator)", fontsize=9)
    return save(fig, out / "memory.png")


def fig_char_lm(runs: list[dict[str, Any]], out: Path) -> str:
    from rnnlab.plots import new_figure

    fig = new_figure(6.5, 3.8)
    ax = fig.add_subplot()
    for r in runs:
        bpc = curve(r["csv"], "val/bpc")
        ax.plot(bpc.index, bpc.values, marker="o", color=COLOURS[r["backend"]], label=f"{r['backend']} val/bpc",
                ls="-" if r["backend"] == "torch" else "--")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.set_title("character LSTM on Shakespeare: validation bpc")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, out / "char_lm_bpc.png")


# -------------------------------------------------------------------------------------------------- report
def f(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def e(value: Any) -> str:
    """A small difference in scientific notation ("-" where there is none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1e}"


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def median(values: list[float]) -> float:
    import statistics

    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def largest(*values: float) -> float:
    """The largest of the values that are numbers (NaN: not measured, e.g. no train/loss logged); NaN if none."""
    numbers = [v for v in values if v is not None and not math.isnan(v)]
    return max(numbers) if numbers else math.nan


def portable_paths(report: Path, work: Path) -> None:
    """The committed report names run directories relative to the repository (as the default ``--work`` puts
    them), not by this machine's absolute paths."""
    shown = work.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else Path("outputs/study_numpy_vs_torch")
    for name in ("runs.csv", "pairs.csv", "README.md"):
        path = report / name
        if path.is_file():
            path.write_text(path.read_text().replace(str(work.resolve()), str(shown)).replace(str(work), str(shown)))


def speed_bullet(facts: dict[str, Any]) -> str:
    """The discussion's speed point, from part 3's measurements (taken under the conditions part 3 states)."""
    parts = []
    if "f32_lstm" in facts:
        lo, mid, hi = facts["f32_lstm"]
        parts.append(f"one float32 LSTM training step takes NumPy {lo:.2f}-{hi:.2f}x torch's time (median {mid:.2f}) "
                     "over the grid")  # fmt: skip
    if "f64_lstm" in facts:
        lo, mid, hi = facts["f64_lstm"]
        parts.append(f"in float64 {lo:.2f}-{hi:.2f}x (median {mid:.2f})")
    cells = facts.get("cells", {})
    if ("rnn", "float32") in cells and ("gru", "float32") in cells:
        h, t = facts["cells_at"]
        parts.append(f"a float32 RNN step {cells[('rnn', 'float32')]:.2f}x and a GRU step "
                     f"{cells[('gru', 'float32')]:.2f}x at hidden {h}, T {t}")  # fmt: skip
    for name, a, b in facts.get("real", []):
        parts.append(f"a whole training run of {name.split(' (')[0]} {b / a:.2f}x")
    if "generation" in facts:
        parts.append(f"batch-1 generation is {facts['generation']:.1f}x faster in NumPy (torch pays its per-operator "
                     "dispatch on every one-character step)")  # fmt: skip
    if not parts:
        return "- **Speed.** (part 3 did not run)"
    return "- **Speed.** On this 2-core CPU, " + "; ".join(parts) + " (part 3, NumPy/torch time ratios)."


# ------------------------------------------------------------------------------------------- environment
DEFAULT_ALLOCATOR = "glibc default"


def check_timing_conditions(grid: dict[str, Any]) -> dict[str, Any]:
    """The conditions the timings were taken under; the report states them, so it refuses any other than a user's
    run has: glibc's default allocation (the speed section once rested on a fixed mmap threshold that slows torch
    twofold)."""
    timing = (grid.get("conditions") or {}).get("timing") or {}
    if timing.get("allocator") != DEFAULT_ALLOCATOR:
        raise SystemExit(
            f"study: the speed measurements were taken with a tuned allocator ({timing.get('allocator')}); "
            "run the speed stage again in a plain environment (no MALLOC_* variables)"
        )
    return timing


def environment_lines(work: Path) -> list[str]:
    """Where the numbers were measured (the speed stage's record, else this process's)."""
    from rnnlab.provenance import describe, environment

    grid_file = work / "speed" / "grid.json"
    env = json.loads(grid_file.read_text()).get("environment") if grid_file.is_file() else None
    env = env or environment()
    return [
        "**Measured on**: " + describe(env) + ". Runs started by this study set `OMP_NUM_THREADS=2` unless they say "
        "otherwise (`threads=1`); every run's `summary.json` records the same facts under `environment`.",
        "",
    ]


# ------------------------------------------------------------------------------------------- controlled
def _cfg_key(s: dict[str, Any]) -> tuple[str, str, int, int]:
    h = s["hparams"]
    return (str(h.get("optimizer/name")), str(h.get("model/cell")), int(h.get("model/num_layers")),
            2 if h.get("model/bidirectional") in (True, "True", "true") else 1)  # fmt: skip


def controlled_jobs(sweep: Path) -> dict[tuple[Any, ...], Path]:
    """(optimizer, cell, layers, directions, backend) -> job directory."""
    out = {}
    for job in jobs(sweep) if sweep.is_dir() else []:
        s = summary(job)
        out[(*_cfg_key(s), s["backend"])] = job
    return out


def loss_gaps(a: Any, b: Any) -> Any:
    """|Δ train/loss| of two runs at their common logged steps."""
    ca, cb = curve(a, "train/loss"), curve(b, "train/loss")
    common = ca.index.intersection(cb.index)
    return (ca[common] - cb[common]).abs()


def first_apart(gaps: Any) -> int | None:
    apart = gaps[gaps > APART]
    return int(apart.index[0]) if len(apart) else None


def controlled_section(work, tmp, facts, collect_runs, pair_runs, write_generic_report) -> list[str]:
    sweep, single = work / "controlled", work / "controlled_1thread"
    lines = ["## 2. The controlled setting", ""]
    if not (sweep.is_dir() and jobs(sweep)):
        return lines
    runs, curves = collect_runs([sweep])
    write_generic_report(runs, curves, tmp / "controlled_report", title="Controlled setting: every run")
    portable_paths(tmp / "controlled_report", work)
    two, one = controlled_jobs(sweep), controlled_jobs(single)
    pairs: list[dict[str, Any]] = []
    for key in sorted({k[:4] for k in two}, key=lambda k: (k[0], ("rnn", "lstm", "gru").index(k[1]), k[2], k[3])):
        jn, jt = two.get((*key, "numpy")), two.get((*key, "torch"))
        if jn is None or jt is None:
            continue
        sn, st = summary(jn), summary(jt)
        cn, ct = csv(jn), csv(jt)
        p = {"optimizer": key[0], "cell": key[1], "layers": key[2], "directions": key[3], "csv_numpy": cn,
             "csv_torch": ct, "acc_numpy": sn["test_metrics"].get("test/acc"), "acc_torch": st["test_metrics"].get(
                 "test/acc"), "params": sn["num_params"], "steps": st["global_step"],
             "time_ratio": sn["step_ms_median"] / st["step_ms_median"] if st["step_ms_median"] else math.nan,
             "backends": loss_gaps(cn, ct)}  # fmt: skip
        for backend in ("torch", "numpy"):
            other = one.get((*key, backend))
            p[f"threads_{backend}"] = loss_gaps(csv(two[(*key, backend)]), csv(other)) if other else None
        p["val_gap"] = float((curve(cn, "val/loss") - curve(ct, "val/loss")).abs().max())
        pairs.append(p)
    if not pairs:
        return lines
    s0 = summary(next(iter(two.values())))
    threads_two = (s0.get("environment") or {}).get("torch", {}).get("threads", 2)
    lines += [
        f"Both backends, {len(pairs)} pairs: cell (rnn, lstm, gru) x layers (1, 2) x directions (uni, bi) x "
        "optimizer (SGD lr 0.1, Adam lr 0.002), each with the same initial weights (one seeded initializer in "
        "torch's layout), the same batches in the same order and the same optimizer formula, in float64 "
        f"(`conf/experiment/study_controlled.yaml`: synthetic_text with {s0['hparams'].get('data/num_samples')} "
        f"sentences, hidden {s0['hparams'].get('model/hidden_size')}, one-hot input, {s0['global_step']} steps, the "
        "training loss logged at every step).",
        "",
        "**The noise floor.** Two runs of the *same* backend that differ only in their thread count "
        f"({threads_two} threads, the default here, against `threads=1`) compute the same sums in another order. "
        "Their difference is what the hardware allows; NumPy against PyTorch is judged against it. The columns are "
        "the largest difference of the logged training losses over all steps, and the first step at which a "
        f"difference exceeds {APART:g}.",
        "",
    ]
    rows = []
    for p in pairs:
        tt, nn = p["threads_torch"], p["threads_numpy"]
        rows.append([p["optimizer"], p["cell"], p["layers"], "bi" if p["directions"] == 2 else "uni",
                     f"{int(p['params']):,}", f(p["acc_torch"]), f(p["acc_numpy"]), e(p["backends"].max()),
                     e(tt.max()) if tt is not None else "-", e(nn.max()) if nn is not None else "-",
                     _apart(first_apart(p["backends"])), _apart(first_apart(tt)) if tt is not None else "-",
                     f(p["time_ratio"], 2)])  # fmt: skip
    lines += table(["optimizer", "cell", "layers", "dirs", "params", "test acc torch", "test acc numpy",
                    "max Δ numpy vs torch", f"max Δ torch {threads_two} vs 1 thread",
                    f"max Δ numpy {threads_two} vs 1 thread", f"numpy vs torch: first step Δ > {APART:g}",
                    f"torch vs torch: first step Δ > {APART:g}", "step time numpy/torch"], rows)  # fmt: skip
    together = [p for p in pairs if first_apart(p["backends"]) is None]
    apart = [p for p in pairs if p not in together]
    floor_apart = [p for p in pairs if p["threads_torch"] is not None and first_apart(p["threads_torch"]) is not None]
    explained = [p for p in apart if p in floor_apart]
    facts.update(controlled_pairs=len(pairs), controlled_together=len(together),
                 controlled_together_gap=largest(*(float(p["backends"].max()) for p in together)),
                 controlled_sgd_gap=largest(*(float(p["backends"].max()) for p in pairs if p["optimizer"] == "sgd")),
                 controlled_max_acc_diff=max(abs(p["acc_numpy"] - p["acc_torch"]) for p in pairs),
                 controlled_apart=", ".join(_name(p) for p in apart), controlled_floor_apart=len(floor_apart),
                 controlled_explained=len(explained))  # fmt: skip
    numpy_floor = [float(p["threads_numpy"].max()) for p in pairs if p["threads_numpy"] is not None]
    lines += [
        f"In {len(together)} of {len(pairs)} pairs the two backends' training losses never differ by more than "
        f"{APART:g} (largest difference {e(facts['controlled_together_gap'])}); with SGD all "
        f"{sum(p['optimizer'] == 'sgd' for p in pairs)} stay within {e(facts['controlled_sgd_gap'])}. "
        + (
            f"{len(apart)} pair{'s' if len(apart) != 1 else ''} separate{'s' if len(apart) == 1 else ''} "
            f"({facts['controlled_apart']}); "
            + (
                f"in {len(explained)} of them torch against torch with another thread count separates too"
                + (
                    ", at a similar step: the separation is the amplified rounding that the hardware allows, not a "
                    "difference between the backends."
                    if len(explained) == len(apart)
                    else "; in the others it does not within this run: there the separation is the amplified "
                    "rounding of the two backends' different summation orders (see below)."
                )
                if floor_apart
                else "torch against torch with another thread count does not separate in these runs"
            )
            if apart
            else "No pair separates."
        )
        + f" Torch against torch separates in {len(floor_apart)} of {len(pairs)} configurations"
        + numpy_floor_text(numpy_floor),
        "",
        f"The test accuracies are equal in {sum(1 for p in pairs if p['acc_numpy'] == p['acc_torch'])} of "
        f"{len(pairs)} pairs (largest difference {f(facts['controlled_max_acc_diff'])}). Median step-time ratio "
        f"numpy/torch {median([p['time_ratio'] for p in pairs]):.2f} at this small size (hidden "
        f"{s0['hparams'].get('model/hidden_size')}), where the per-step overheads of both dominate; part 3 measures "
        "larger sizes.",
        "",
    ]
    for optimizer in sorted({p["optimizer"] for p in pairs}):
        lines += [f"![controlled {optimizer}]({fig_controlled(pairs, optimizer, tmp)})", "",
                  f"![noise floor {optimizer}]({fig_noise_floor(pairs, optimizer, tmp, threads_two)})", ""]  # fmt: skip
    link = "[controlled_report/](controlled_report/README.md)"
    lines += [f"Every NumPy/PyTorch run of this sweep, as `rnnlab-report` writes it: {link}.", ""]
    return lines


def numpy_floor_text(floor: list[float]) -> str:
    if not floor:
        return "."
    if max(floor) == 0:
        return ("; NumPy against NumPy with one BLAS thread is identical in every pair (OpenBLAS divides a matrix "
                "product among its threads by blocks of the result, so no sum changes its order).")  # fmt: skip
    return f"; NumPy against NumPy with one BLAS thread differs by at most {e(max(floor))}."


def _apart(step: int | None) -> str:
    return "-" if step is None else str(step)


def _name(p: dict[str, Any]) -> str:
    return f"{p['optimizer']} {p['cell']} {p['layers']}-layer {'bi' if p['directions'] == 2 else 'uni'}"


def adagrad_section(work: Path, tmp: Path, facts: dict[str, Any]) -> list[str]:
    base = work / "noise"
    runs = {}
    for job in sorted(base.glob("acc*_*_*")) if base.is_dir() else []:
        if (job / "summary.json").is_file():
            acc, backend, threads = job.name.split("_")
            runs[(f"{float(acc[3:]):g}", backend, int(threads))] = csv(job)
    if not runs:
        return []
    lines = ["### Why Adam and Adagrad amplify rounding", ""]
    lines += [
        "Adagrad divides each weight's step by the root of the sum of its squared gradients, Adam by the root of "
        "their running mean: `step = lr * g / (sqrt(G) + eps)`. For a weight whose gradients have been tiny, `G` "
        "is tiny too, so the step is about `lr * sign(g)`: a full-sized step whose direction is decided by a "
        "gradient that may be no bigger than its rounding error. Two computations of that gradient that differ in "
        "the last bit (another summation order: another thread count, another library) can then move the weight "
        "by `lr` in opposite directions, and the two trajectories separate within a few steps. `eps` and Adagrad's "
        "`initial_accumulator_value` set the scale below which this happens: with an accumulator of 0.1, `G` starts "
        "at 0.1 and a rounding-sized gradient makes a rounding-sized step.",
        "",
        "The example (`scripts/study_numpy_vs_torch.py`, stage `noise`): a 2-layer bidirectional RNN classifier on "
        "`synthetic_text`, float64, Adagrad (lr 0.05), seed 11, with 2 and with 1 CPU thread on each backend. "
        "Relative differences of the training loss:",
        "",
    ]
    rows = []
    for acc in sorted({k[0] for k in runs}):
        comparisons = (("torch 2 vs 1 thread", ("torch", 2), ("torch", 1)), ("numpy 2 vs 1 thread", ("numpy", 2),
                       ("numpy", 1)), ("numpy vs torch (2 threads)", ("numpy", 2), ("torch", 2)))  # fmt: skip
        for label, a, b in comparisons:
            if (acc, *a) not in runs or (acc, *b) not in runs:
                continue
            ca, cb = curve(runs[(acc, *a)], "train/loss"), curve(runs[(acc, *b)], "train/loss")
            common = ca.index.intersection(cb.index)
            rel = ((ca[common] - cb[common]).abs() / cb[common].abs()).to_numpy()
            at = {s: rel[s] for s in (5, 9, 19, len(rel) - 1) if s < len(rel)}
            rows.append([acc, label, *(e(at.get(s)) for s in (5, 9, 19)), e(float(rel.max()))])
            facts[f"adagrad_{acc}_{label.split()[0]}_{label.split()[2] if 'vs' in label else ''}"] = float(rel.max())
    lines += table(["initial accumulator", "runs compared", "step 5", "step 9", "step 19", "largest"], rows)
    lines += [f"![adagrad]({fig_adagrad(runs, tmp)})", ""]

    def largest_of(acc: str, a: tuple[str, int], b: tuple[str, int]) -> float:
        if (acc, *a) not in runs or (acc, *b) not in runs:
            return math.nan
        ca, cb = curve(runs[(acc, *a)], "train/loss"), curve(runs[(acc, *b)], "train/loss")
        common = ca.index.intersection(cb.index)
        return float(((ca[common] - cb[common]).abs() / cb[common].abs()).max())

    floor0, across0 = largest_of("0", ("torch", 2), ("torch", 1)), largest_of("0", ("numpy", 2), ("torch", 2))
    floor1, across1 = largest_of("0.1", ("torch", 2), ("torch", 1)), largest_of("0.1", ("numpy", 2), ("torch", 2))
    if floor0 > APART and across0 > APART:
        verdict = "both separate: NumPy differs from torch as much as torch differs from itself"
    elif across0 > APART:
        verdict = "NumPy separates from torch while torch with another thread count does not, in these runs"
    else:
        verdict = "neither separates in these runs"
    lines += [
        f"Without an accumulator torch against torch reaches a relative difference of {e(floor0)} and NumPy against "
        f"torch {e(across0)}: {verdict}. With an accumulator of 0.1 the two stay at {e(floor1)} and {e(across1)}.",
        "",
    ]
    return lines


# ------------------------------------------------------------------------------------------------- speed
def speed_section(work: Path, tmp: Path, facts: dict[str, Any]) -> list[str]:
    speed = work / "speed"
    lines = ["## 3. Speed and memory", ""]
    if not (speed / "grid.json").is_file():
        return lines
    grid = json.loads((speed / "grid.json").read_text())
    cells_doc = json.loads((speed / "cells.json").read_text())
    timing = check_timing_conditions(grid)
    check_timing_conditions(cells_doc)
    cells = cells_doc["rows"]
    gen = json.loads((speed / "generation.json").read_text())
    lines += [
        "One training step of the recurrent layer (`scripts/bench_grid.py`): zero the gradients, forward over "
        f"T steps, backward with the input gradient; batch {grid['batch']}, input {grid['input']}, one layer; "
        "the NumPy network and torch's fused kernel (oneDNN on this CPU) start from the same weights.",
        "",
        f"**Conditions.** Time as a user's run experiences it: one process, {timing.get('allocator')} memory "
        f"allocation (no `MALLOC_*` tuning), torch with {timing.get('torch_threads')} threads and OpenBLAS with "
        f"{'/'.join(str(t) for t in timing.get('blas_threads') or []) or '?'}; the two backends' blocks alternate, "
        f"{timing.get('rounds')} rounds of {timing.get('warmup')} warm-up and {timing.get('iters')} timed calls; "
        "medians. Memory is measured apart, in a fresh process per backend and grid point, also with the default "
        "allocator: **RSS** is the peak resident memory that the first three steps add to the process (what the "
        "operating system provides, caches and the allocator's slack included), **allocated** the peak bytes one "
        "step holds as each library counts them (NumPy: `tracemalloc`, from an empty buffer pool; torch: its "
        "profiler's per-operator allocations, in time order). An earlier version of this page timed both backends "
        "under the memory measurement's fixed `MALLOC_MMAP_THRESHOLD_`, which made torch map and unmap its large "
        "buffers at every step and up to 2.4x slower; its speed and memory claims are withdrawn.",
        "",
    ]
    rows = []
    for r in grid["rows"]:
        rows.append([r["dtype"], r["hidden"], r["length"], f(r["torch_ms"], 1), f(r["numpy_ms"], 1),
                     f(r["time_ratio"], 2), f"{r['torch_seq_per_s']:,.0f}", f"{r['numpy_seq_per_s']:,.0f}",
                     f(r.get("torch_rss_mb"), 1), f(r.get("numpy_rss_mb"), 1), f(r.get("torch_alloc_mb"), 1),
                     f(r.get("numpy_alloc_mb"), 1)])  # fmt: skip
    lines += table(["dtype", "hidden", "T", "torch ms", "numpy ms", "numpy/torch", "torch seq/s", "numpy seq/s",
                    "torch RSS MB", "numpy RSS MB", "torch alloc MB", "numpy alloc MB"], rows)  # fmt: skip
    lines += [f"![speed ratio]({fig_speed(grid['rows'], tmp)})", "", f"![memory]({fig_memory(grid['rows'], tmp)})",
              ""]  # fmt: skip
    h, t = cells[0]["hidden"], cells[0]["length"]
    rows = [[r["cell"], r["dtype"], f(r["torch_ms"], 1), f(r["numpy_ms"], 1), f(r["time_ratio"], 2),
             f(r.get("torch_rss_mb"), 1), f(r.get("numpy_rss_mb"), 1), f(r.get("torch_alloc_mb"), 1),
             f(r.get("numpy_alloc_mb"), 1)] for r in cells]  # fmt: skip
    lines += [f"Every cell at hidden {h}, T = {t}:", ""]
    lines += table(["cell", "dtype", "torch ms", "numpy ms", "numpy/torch", "torch RSS MB", "numpy RSS MB",
                    "torch alloc MB", "numpy alloc MB"], rows)  # fmt: skip
    g = gen.get("generation", gen)
    if isinstance(g, dict) and "numpy_us_per_char" in g:
        facts["generation"] = g["torch_us_per_char"] / g["numpy_us_per_char"]
        lines += [
            f"Batch-1 generation (a char LSTM, hidden {g['hidden']}, {g['length']} characters, "
            f"`LanguageModelTask.generate`): NumPy {g['numpy_us_per_char']:.0f} µs per character, PyTorch "
            f"{g['torch_us_per_char']:.0f} µs ({facts['generation']:.1f}x slower: one tiny step is all dispatch "
            "overhead for torch, while NumPy's batch-1 path is a few small matrix-vector products).",
            "",
        ]
    real = real_runs(work)
    if real:
        lines += [
            "**Whole training runs** (`rnnlab-train`, the `time/step_ms` a user sees: the median training step of "
            "the run, data loading, embedding, head, loss and optimizer included, the first 5 steps skipped):",
            "",
        ]
        lines += table(["setting", "torch ms/step", "numpy ms/step", "numpy/torch"],
                       [[name, f(a, 1), f(b, 1), f(b / a, 2)] for name, a, b in real])  # fmt: skip
        facts["real"] = real
    f32 = [r for r in grid["rows"] if r["dtype"] == "float32"]
    f64 = [r for r in grid["rows"] if r["dtype"] == "float64"]
    if f32:
        facts["f32_lstm"] = (min(r["time_ratio"] for r in f32), median([r["time_ratio"] for r in f32]),
                             max(r["time_ratio"] for r in f32))  # fmt: skip
    if f64:
        facts["f64_lstm"] = (min(r["time_ratio"] for r in f64), median([r["time_ratio"] for r in f64]),
                             max(r["time_ratio"] for r in f64))  # fmt: skip
    facts["cells"] = {(r["cell"], r["dtype"]): r["time_ratio"] for r in cells}
    facts["cells_at"] = (h, t)
    rss = [r["numpy_rss_mb"] / r["torch_rss_mb"] for r in grid["rows"] if r.get("numpy_rss_mb") and r.get(
        "torch_rss_mb")]  # fmt: skip
    alloc = [r["alloc_ratio"] for r in grid["rows"] if r.get("alloc_ratio")]
    lines += ["What the numbers say:", ""]
    if f32:
        lo, mid, hi = facts["f32_lstm"]
        lines.append(f"- float32 LSTM: NumPy/torch {lo:.2f} to {hi:.2f} over the grid (median {mid:.2f}). "
                     + speed_reading(f32) + ".")  # fmt: skip
    if f64:
        lo, mid, hi = facts["f64_lstm"]
        lines.append(f"- float64 LSTM: NumPy/torch {lo:.2f} to {hi:.2f} (median {mid:.2f}). " + speed_reading(f64)
                     + ".")  # fmt: skip
    others = [f"{c} {d} {r:.2f}" for (c, d), r in sorted(facts["cells"].items())]
    lines.append(f"- every cell at hidden {h}, T {t} (NumPy/torch): " + ", ".join(others) + ".")
    if rss or alloc:
        facts["rss_ratio"] = median(rss) if rss else math.nan
        facts["alloc_ratio"] = median(alloc) if alloc else math.nan
        lines.append(
            f"- memory: a NumPy step holds {median(alloc):.2f}x the bytes a torch step holds allocated (median over "
            f"the grid), and its first steps add {median(rss):.2f}x the resident memory (torch's figure includes "
            "what its kernels and the allocator keep on first use). Both keep every timestep's gate activations for "
            "the backward pass."
        )
    lines.append("")
    return lines


def speed_reading(rows: list[dict[str, Any]]) -> str:
    """What the ratios do with the size: derived from the rows, no explanation the data does not show."""
    small = min(rows, key=lambda r: (r["hidden"], r["length"]))
    big = max(rows, key=lambda r: (r["hidden"], r["length"]))
    faster = sum(1 for r in rows if r["time_ratio"] < 1)
    return (f"NumPy is faster at {faster} of {len(rows)} grid points; {small['time_ratio']:.2f} at "
            f"H {small['hidden']}, T {small['length']} and {big['time_ratio']:.2f} at H {big['hidden']}, "
            f"T {big['length']}")  # fmt: skip


def real_runs(work: Path) -> list[tuple[str, float, float]]:
    """(setting, torch ms/step, numpy ms/step) from real rnnlab-train runs of both backends."""
    out = []
    lm = work / "char_lm"
    if lm.is_dir():
        by = {summary(j)["backend"]: summary(j) for j in jobs(lm)}
        if {"torch", "numpy"} <= set(by):
            out.append(("the default char LSTM (hidden 256, batch 64 x 100, float32, Adam)",
                        by["torch"]["step_ms_median"], by["numpy"]["step_ms_median"]))  # fmt: skip
    o = work / "original"
    if (o / "torch_adam" / "summary.json").is_file() and (o / "numpy_adam" / "summary.json").is_file():
        out.append(("the seed study's setting (1-layer RNN 64, one-hot, batch 64, float32, Adam)",
                    summary(o / "torch_adam")["step_ms_median"],
                    summary(o / "numpy_adam")["step_ms_median"]))  # fmt: skip
    return out


def write_report(work: Path, out: Path, quick: bool, elapsed: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "rnnlab"
    import numpy as np

    from rnnlab.atomic import replace_dir
    from rnnlab.report import collect_runs, pair_runs
    from rnnlab.report import write_report as write_generic_report

    with replace_dir(out) as tmp:
        lines = _report_lines(work, tmp, quick, elapsed, np, collect_runs, pair_runs, write_generic_report)
        (tmp / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/README.md")


def _report_lines(work, tmp, quick, elapsed, np, collect_runs, pair_runs, write_generic_report) -> list[str]:
    lines = ["# NumPy against PyTorch: the comparison study", ""]
    facts: dict[str, Any] = {}
    total = sum(elapsed.values())
    lines += [
        "Regenerate everything (under 30 minutes on a 2-core CPU, plus the first set-up of `.venv`): "
        "`bash scripts/reproduce_comparison.sh`.",
        "This page, its figures and `controlled_report/` are written by `scripts/study_numpy_vs_torch.py`; the runs "
        "themselves go to `outputs/study_numpy_vs_torch/` (not committed). Seed 42 throughout; accuracies and losses "
        "repeat exactly from run to run, timings are medians after warm-up and move with the machine's load.",
        "",
    ]
    if quick:
        lines += ["**Quick mode**: tiny sizes for a smoke test; the numbers below mean nothing.", ""]
    if elapsed:
        parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in elapsed.items())
        lines += [f"Last full regeneration took {total / 60:.1f} min ({parts}).", ""]
    lines += environment_lines(work)

    # 1 -------------------------------------------------------------------------------------- original
    original = []
    base = work / "original"
    for name, label in (("numpy_sgd", "NumPy + SGD (lr 0.1)"), ("torch_adam", "PyTorch + Adam (lr 0.005)"),
                        ("numpy_adam", "NumPy + Adam (lr 0.005)")):  # fmt: skip
        job = base / name
        if not (job / "summary.json").is_file():
            continue
        s = summary(job)
        original.append({"name": name, "label": label, "backend": s["backend"], "csv": csv(job), "summary": s,
                         "train_acc": split_accuracy(job, "train")})  # fmt: skip
    lines += ["## 1. The original setting", ""]
    lines += [
        "`synthetic_text` (10,000 generated sentences, 80/20 train/test, 10 % of the training part for validation), "
        "20 epochs, batch 64, a one-layer tanh RNN with 64 units over one-hot characters: the seed study's setting "
        "(`conf/experiment/study_original.yaml`). As there, NumPy trains with plain SGD and PyTorch with Adam; the "
        "third run gives NumPy the same Adam. The seed study reported 87.0 % (NumPy) against 100.0 % (PyTorch) "
        "train accuracy.",
        "",
    ]
    if original:
        rows = []
        for r in original:
            s = r["summary"]
            rows.append([r["label"], f"{100 * r['train_acc']:.1f} %", f"{100 * s['test_metrics']['test/acc']:.1f} %",
                         f(s["test_metrics"]["test/loss"]), f(s["step_ms_median"], 2), f(s["wall_s"], 0)])  # fmt: skip
        lines += table(["run", "train acc", "test acc", "test loss", "median step ms", "wall s"], rows)
        lines += [f"![original]({fig_original(original, tmp)})", ""]
        by = {r["name"]: r for r in original}
        gap = by["torch_adam"]["train_acc"] - by["numpy_sgd"]["train_acc"] if {"torch_adam", "numpy_sgd"} <= set(by) \
            else math.nan  # fmt: skip
        facts["original_gap"] = gap
        text = (f"The gap we measure is {100 * gap:+.1f} points of train accuracy (PyTorch + Adam minus NumPy + "
                "SGD).")  # fmt: skip
        if {"torch_adam", "numpy_adam"} <= set(by):
            same = by["numpy_adam"]["train_acc"] - by["torch_adam"]["train_acc"]
            facts["original_same_optimizer"] = same
            where = "level with" if same == 0 else f"{100 * abs(same):.1f} points {'above' if same > 0 else 'below'}"
            text += (f" With the same Adam, NumPy ends {where} PyTorch ({100 * by['numpy_adam']['train_acc']:.1f} % "
                     f"against {100 * by['torch_adam']['train_acc']:.1f} %): the gap is the optimizer's. Part 2 shows "
                     "the two backends step by step.")  # fmt: skip
        lines += [text, ""]

    # 2 ------------------------------------------------------------------------------------ controlled
    lines += controlled_section(work, tmp, facts, collect_runs, pair_runs, write_generic_report)
    lines += adagrad_section(work, tmp, facts)

    # 3 --------------------------------------------------------------------------------------- speed
    lines += speed_section(work, tmp, facts)

    # 4 ---------------------------------------------------------------------------------- vanishing
    vg = work / "vanishing"
    lines += ["## 4. Vanishing gradients", ""]
    if vg.is_dir() and jobs(vg):
        from vanishing_gradient_report import SOLVED_MSE, gradient_curve, read_job

        from rnnlab.plots import new_figure

        vruns = [read_job(j) for j in jobs(vg)]
        lengths = sorted({r["length"] for r in vruns})
        lines += [
            "The adding problem (`experiment=vanishing_gradient`, lengths "
            + ", ".join(map(str, lengths))
            + "): predict the sum of the two marked values in a sequence of random numbers; the constant mean "
            f"scores about 0.167. Hidden 64, Adam, 10 epochs, torch backend. Solved: test MSE < {SOLVED_MSE}. "
            "The longer study (lengths up to 100) is in [../vanishing_gradient/](../vanishing_gradient/README.md).",
            "",
        ]
        rows = []
        for cell in ("rnn", "lstm", "gru"):
            row = [cell]
            for n in lengths:
                r = next((r for r in vruns if r["cell"] == cell and r["length"] == n), None)
                row.append("-" if r is None else f"{r['test_mse']:.4f}" + (" (solved)" if r["test_mse"] < SOLVED_MSE
                                                                          else ""))  # fmt: skip
            rows.append(row)
        lines += table(["cell", *[f"T = {n}" for n in lengths]], rows)
        n = max(lengths)
        fig = new_figure(6.5, 3.8)
        ax = fig.add_subplot()
        for r in (r for r in vruns if r["length"] == n):
            g = gradient_curve(r)
            ax.semilogy(np.arange(1, n + 1), np.maximum(g, 1e-30), label=f"{r['cell']} (test MSE {r['test_mse']:.4f})")
        ax.set_xlabel("timestep t")
        ax.set_ylabel("||dL/dh_t||, 32 test sequences")
        ax.set_title(f"adding problem, length {n}: the gradient reaching each step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        lines += [f"![gradient through time]({save(fig, tmp / 'vanishing_gradient.png')})", ""]

    # 5 ------------------------------------------------------------------------------------- char LM
    lm = work / "char_lm"
    lines += ["## 5. Character language model on Shakespeare", ""]
    if lm.is_dir() and jobs(lm):
        from rnnlab.tasks.language_model import LanguageModelTask

        lruns = []
        for job in jobs(lm):
            s = summary(job)
            ckpt = best_checkpoint(job)
            task = LanguageModelTask.load_from_checkpoint(ckpt, map_location="cpu")
            sample = task.generate("ROMEO:", 300, temperature=0.8, seed=0)
            lruns.append({"backend": s["backend"], "summary": s, "csv": csv(job), "sample": sample})
        lruns.sort(key=lambda r: r["backend"] != "torch")
        s0 = lruns[0]["summary"]
        lines += [
            f"The embedded default (`rnnlab-train`: a one-layer LSTM, hidden {s0['hparams'].get('model/hidden_size')}, "
            f"embedding {s0['hparams'].get('model/embed_dim')}, windows of {s0['hparams'].get('data/seq_len')} "
            f"characters, Adam) for one epoch ({s0['global_step']} steps), validated four times, float32, on both "
            "backends from the same initial weights.",
            "",
        ]
        rows = [[r["backend"], f(r["summary"]["test_metrics"].get("test/bpc")),
                 f(r["summary"]["test_metrics"].get("test/ppl"), 2), f(r["summary"]["step_ms_median"], 1),
                 f"{r['summary']['samples_per_s']:,.0f}"] for r in lruns]  # fmt: skip
        lines += table(["backend", "test bpc", "test ppl", "median step ms", "windows/s"], rows)
        lines += [f"![char LM]({fig_char_lm(lruns, tmp)})", ""]
        for r in lruns:
            lines += [f"Sample from the {r['backend']} checkpoint (temperature 0.8, seed 0, prompt `ROMEO:`):", "",
                      "```text", r["sample"], "```", ""]  # fmt: skip

    # 6 ------------------------------------------------------------------------------------- discussion
    numpy_dir = ROOT / "rnnlab" / "models" / "numpy"
    torch_dir = ROOT / "rnnlab" / "models" / "torch"
    loc = {name: code_lines(ROOT / "rnnlab" / "cells" / f"{name}.py") for name in ("rnn", "lstm", "gru")}
    shared = {name: code_lines(numpy_dir / f"{name}.py") for name in ("stack", "net", "layers", "losses", "optim",
                                                                       "memory", "params")}  # fmt: skip
    torch_loc = code_lines(torch_dir / "recurrent.py")
    lines += ["## 6. Discussion", ""]
    lines += [
        "- **Same numbers.** With the same weights, data order and optimizer formula the NumPy backend computes "
        f"what PyTorch computes: in {facts.get('controlled_together', '-')} of {facts.get('controlled_pairs', '-')} "
        f"controlled pairs (part 2, float64) every training loss agrees within {APART:g} (largest difference "
        f"{e(facts.get('controlled_together_gap'))})"
        + (
            f"; where the two separate ({facts['controlled_apart']}) they agree to rounding at first and then drift "
            f"apart, and in {facts.get('controlled_explained', 0)} of those torch itself separates from torch run "
            "with another thread count: that is the floor the hardware sets, amplified by the adaptive optimizer "
            "(the Adagrad example)"
            if facts.get("controlled_apart")
            else ""
        )
        + f". The test accuracies differ by at most {f(facts.get('controlled_max_acc_diff'))}. The original "
        f"setting's gap of {100 * facts.get('original_gap', math.nan):+.1f} points of train accuracy (part 1) is "
        "the optimizer's (plain SGD against Adam over the same 20 epochs), not NumPy's: with Adam, NumPy ends "
        f"{100 * abs(facts.get('original_same_optimizer', math.nan)):.1f} points from PyTorch.",
        speed_bullet(facts),
        "- **What autograd and fused kernels buy.** The PyTorch backend's recurrent network is "
        f"{torch_loc} lines of code (`rnnlab/models/torch/recurrent.py`) for all three cells, any depth and "
        "direction; GPU support comes with it. The NumPy cells (`rnnlab/cells/`: forward and hand-written backward "
        "side by side, with the generation step and the registration under the cell protocol) are "
        + ", ".join(f"{k} {v}" for k, v in loc.items())
        + " lines, plus "
        + f"{sum(shared.values())} lines of shared machinery ("
        + ", ".join(f"{k} {v}" for k, v in shared.items())
        + "), every line of which needs a gradient check against autograd and finite differences (the test "
        "suite's parity tests).",
        "",
        "Lines of code: non-blank lines that are neither comments nor docstrings, counted by this script.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "study_numpy_vs_torch")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "numpy_vs_torch")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that the study runs, numbers mean nothing")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    args.work.mkdir(parents=True, exist_ok=True)
    timing_file = args.work / "elapsed.json"
    elapsed = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    runners = {"original": stage_original, "controlled": stage_controlled, "noise": stage_noise,
               "speed": stage_speed, "vanishing": stage_vanishing, "char_lm": stage_char_lm}  # fmt: skip
    for stage in stages:
        if stage == "report":
            continue
        print(f"study: {stage}", flush=True)
        t0 = time.perf_counter()
        runners[stage](args.work, args.quick)
        elapsed[stage] = time.perf_counter() - t0
        write_text(timing_file, json.dumps(elapsed, indent=1))
    if "report" in stages:
        print("study: report", flush=True)
        write_report(args.work, args.out, args.quick, {k: elapsed[k] for k in runners if k in elapsed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
