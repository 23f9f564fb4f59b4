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
   backends, float64, same initial weights and data order; the curves are compared step by step.
3. ``speed``: scripts/bench_grid.py (LSTM over hidden {64,128,256,512} x length {50,100,200} x float32/float64,
   every cell at 256 x 100) and the batch-1 generation of scripts/bench_backends.py.
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
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
STAGES = ("original", "controlled", "speed", "vanishing", "char_lm", "report")
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
    for name, backend, optimizer, lr in (("numpy_sgd", "numpy", "sgd", 0.1), ("torch_adam", "torch", "adam", 0.005)):
        train(["experiment=study_original", f"model.backend={backend}", f"optimizer={optimizer}",
               f"optimizer.lr={lr}", f"seed={SEED}", "trainer.enable_progress_bar=false", *extra,
               f"hydra.run.dir={base / name}"], base / f"{name}.log")  # fmt: skip


def stage_controlled(work: Path, quick: bool) -> None:
    base = work / "controlled"
    if base.exists():
        shutil.rmtree(base)
    extra = ["data.num_samples=400", "trainer.max_epochs=1", "model=rnn,gru", "model.num_layers=1"] if quick else []
    train(["experiment=study_controlled", f"seed={SEED}", *extra, f"hydra.sweep.dir={base}"],
          work / "controlled.log")  # fmt: skip


def stage_speed(work: Path, quick: bool) -> None:
    base = fresh(work / "speed")
    short = ["--iters", "2", "--rounds", "1"] if quick else []
    grid = ["--hidden", "64,128", "--lengths", "20"] if quick else []
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
    train(["experiment=vanishing_gradient", f"data.length={lengths}", f"seed={SEED}",
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


def fig_controlled(pairs: list[dict[str, Any]], optimizer: str, out: Path) -> str:
    from rnnlab.plots import new_figure

    chosen = [p for p in pairs if p["optimizer"] == optimizer]
    cols = sorted({(p["layers"], p["directions"]) for p in chosen})
    cells = [c for c in ("rnn", "lstm", "gru") if any(p["cell"] == c for p in chosen)]
    fig = new_figure(3.0 * len(cols) + 1, 2.4 * len(cells) + 0.6)
    axes = fig.subplots(len(cells), len(cols), squeeze=False, sharex=True)
    for p in chosen:
        ax = axes[cells.index(p["cell"])][cols.index((p["layers"], p["directions"]))]
        for backend, style in (("torch", "-"), ("numpy", "--")):
            c = curve(p[f"csv_{backend}"], "val/loss")
            ax.plot(
                c.index, c.values, style, color=COLOURS[backend], label=backend, lw=1.6 if backend == "torch" else 1.2
            )
        ax.set_title(f"{p['cell']}, {p['layers']} layer(s), {'bi' if p['directions'] == 2 else 'uni'}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for row in axes:
        row[0].set_ylabel("val/loss")
    fig.suptitle(f"controlled setting, {optimizer}: validation loss, torch (solid) and numpy (dashed)", fontsize=10)
    return save(fig, out / f"controlled_{optimizer}.png")


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

    fig = new_figure(10, 3.8)
    ax = fig.add_subplot()
    rows = sorted(grid, key=lambda r: (r["dtype"], r["hidden"], r["length"]))
    x = range(len(rows))
    width = 0.4
    for k, backend in enumerate(("numpy", "torch")):
        ax.bar([i + (k - 0.5) * width for i in x], [r[f"{backend}_peak_mb"] or 0 for r in rows], width,
               color=COLOURS[backend], label=backend)  # fmt: skip
    ax.set_xticks(list(x), [f"{r['dtype'][5:]}\nH{r['hidden']}\nT{r['length']}" for r in rows], fontsize=6)
    ax.set_ylabel("peak extra RSS of a step (MB)")
    ax.set_title("LSTM training step: peak working memory (batch 64)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
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
    """The discussion's speed point, from part 3's measurements."""
    parts = []
    if "f32_lstm" in facts:
        lo, mid, hi = facts["f32_lstm"]
        parts.append(f"a float32 LSTM step takes NumPy {lo:.2f}-{hi:.2f}x torch's time (median {mid:.2f}) over the "
                     "grid: the same GEMMs dominate both (OpenBLAS and oneDNN), and torch's fused LSTM kernel "
                     "wins the rest")  # fmt: skip
    cells = facts.get("cells", {})
    if ("rnn", "float32") in cells and ("gru", "float32") in cells:
        h, t = facts["cells_at"]
        rnn, gru = cells[("rnn", "float32")], cells[("gru", "float32")]
        parts.append(
            f"a float32 RNN step takes NumPy {rnn:.2f}x and a GRU step {gru:.2f}x torch's time at hidden {h}, T {t}"
        )
    if "f64_lstm" in facts:
        lo, mid, hi = facts["f64_lstm"]
        parts.append(f"in float64, where torch has no oneDNN kernel, NumPy takes {lo:.2f}-{hi:.2f}x torch's time "
                     f"(median {mid:.2f})")  # fmt: skip
    if "generation" in facts:
        parts.append(
            f"batch-1 generation is {facts['generation']:.1f}x faster in NumPy: a step of one character is a few "
            "small matrix-vector products, which cost less than torch's per-operator dispatch"
        )
    if not parts:
        return "- **Speed.** (part 3 did not run)"
    return "- **Speed.** On this 2-core CPU, " + "; ".join(parts) + " (part 3)."


def write_report(work: Path, out: Path, quick: bool, elapsed: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "rnnlab"
    import numpy as np

    from rnnlab.report import collect_runs, pair_runs
    from rnnlab.report import write_report as write_generic_report

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        lines = _report_lines(work, tmp, quick, elapsed, np, collect_runs, pair_runs, write_generic_report)
        (tmp / "README.md").write_text("\n".join(lines) + "\n")
        tmp.chmod(0o755)
        old = out.with_name(f".{out.name}-old")
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out}/README.md")


def _report_lines(work, tmp, quick, elapsed, np, collect_runs, pair_runs, write_generic_report) -> list[str]:
    lines = ["# NumPy against PyTorch: the comparison study", ""]
    facts: dict[str, float] = {}
    total = sum(elapsed.values())
    lines += [
        "Regenerate everything (about 20 minutes on a 2-core CPU, plus the first set-up of `.venv`): "
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

    # 1 -------------------------------------------------------------------------------------- original
    original = []
    base = work / "original"
    for name, label in (("numpy_sgd", "NumPy + SGD (lr 0.1)"), ("torch_adam", "PyTorch + Adam (lr 0.005)")):
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
        "(`conf/experiment/study_original.yaml`). As there, NumPy trains with plain SGD and PyTorch with Adam. "
        "The seed study reported 87.0 % (NumPy) against 100.0 % (PyTorch) train accuracy.",
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
        gap = original[-1]["train_acc"] - original[0]["train_acc"] if len(original) == 2 else math.nan
        facts["original_gap"] = gap
        lines += [
            f"The gap we measure is {100 * gap:+.1f} points of train accuracy (PyTorch + Adam minus NumPy + SGD). "
            "Part 2 gives both backends the same optimizer, and part 6 sums up what that shows.",
            "",
        ]

    # 2 ------------------------------------------------------------------------------------ controlled
    sweep = work / "controlled"
    lines += ["## 2. The controlled setting", ""]
    pairs_out: list[dict[str, Any]] = []
    if sweep.is_dir() and jobs(sweep):
        runs, curves = collect_runs([sweep])
        pairs = pair_runs(runs, curves)
        by_run = {r["run"]: r for _, r in runs.iterrows()}
        for _, p in pairs.iterrows():
            n, t = by_run[p["run_numpy"]], by_run[p["run_torch"]]
            jn, jt = Path(n["path"]), Path(t["path"])
            cn, ct = csv(jn), csv(jt)
            tl_n, tl_t = curve(cn, "train/loss"), curve(ct, "train/loss")
            common = tl_n.index.intersection(tl_t.index)
            gaps = (tl_n[common] - tl_t[common]).abs()
            train_gap = float(gaps.max()) if len(common) else math.nan
            apart = gaps[gaps > APART]
            pairs_out.append({
                "cell": p["cell"], "layers": int(p["layers"]), "directions": int(p["directions"]),
                "optimizer": n["optimizer"], "csv_numpy": cn, "csv_torch": ct,
                "acc_numpy": n.get("test/acc"), "acc_torch": t.get("test/acc"),
                "val_gap": p["curve_max_abs_diff"], "train_gap": train_gap, "steps": int(p["curve_common_steps"]),
                "time_ratio": p["time_ratio"], "params": n["num_params"], "gaps": gaps,
                "apart_step": int(apart.index[0]) if len(apart) else None,
            })  # fmt: skip
        write_generic_report(runs, curves, tmp / "controlled_report", title="Controlled setting: every run")
        portable_paths(tmp / "controlled_report", work)
        s0 = summary(jobs(sweep)[0])
        lines += [
            f"Both backends, {len(pairs_out)} pairs: cell (rnn, lstm, gru) x layers (1, 2) x directions (uni, bi) x "
            "optimizer (SGD lr 0.1, Adam lr 0.002), each with the same initial weights (one seeded initializer in "
            "torch's layout), the same batches in the same order and the same optimizer formula, in float64 "
            f"(`conf/experiment/study_controlled.yaml`: synthetic_text with {s0['hparams'].get('data/num_samples')} "
            f"sentences, hidden {s0['hparams'].get('model/hidden_size')}, one-hot input, "
            f"{s0['global_step']} steps). The curve columns are the largest difference between the two backends' "
            "logged losses over every logged step (train/loss every 10 steps, val/loss every epoch).",
            "",
        ]
        rows = []
        for p in sorted(pairs_out, key=lambda p: (p["optimizer"], ("rnn", "lstm", "gru").index(p["cell"]),
                                                   p["layers"], p["directions"])):  # fmt: skip
            rows.append([p["optimizer"], p["cell"], p["layers"], "bi" if p["directions"] == 2 else "uni",
                         f"{int(p['params']):,}", f(p["acc_torch"]), f(p["acc_numpy"]), e(p["train_gap"]),
                         e(p["val_gap"]), "-" if p["apart_step"] is None else p["apart_step"],
                         f(p["time_ratio"], 2)])  # fmt: skip
        lines += table(["optimizer", "cell", "layers", "dirs", "params", "test acc torch", "test acc numpy",
                        "max Δ train/loss", "max Δ val/loss", f"first step Δ > {APART:g}",
                        "step time numpy/torch"], rows)  # fmt: skip
        together = [p for p in pairs_out if p["apart_step"] is None and largest(p["train_gap"], p["val_gap"]) <= APART]
        apart = [p for p in pairs_out if p not in together]
        same_acc = sum(1 for p in pairs_out if p["acc_numpy"] == p["acc_torch"])
        facts["controlled_together"] = len(together)
        facts["controlled_pairs"] = len(pairs_out)
        facts["controlled_together_gap"] = largest(*(g for p in together for g in (p["train_gap"], p["val_gap"])))
        facts["controlled_sgd_gap"] = largest(
            *(g for p in pairs_out if p["optimizer"] == "sgd" for g in (p["train_gap"], p["val_gap"]))
        )
        facts["controlled_max_acc_diff"] = max(abs(p["acc_numpy"] - p["acc_torch"]) for p in pairs_out)
        facts["controlled_apart"] = ", ".join(
            f"{p['optimizer']} {p['cell']} {p['layers']}-layer {'bi' if p['directions'] == 2 else 'uni'}" for p in apart
        )
        lines += [
            f"In {len(together)} of {len(pairs_out)} pairs every logged loss of the two backends agrees to "
            f"{e(facts['controlled_together_gap'])} or better over the whole run"
            + (f"; with SGD all {sum(p['optimizer'] == 'sgd' for p in pairs_out)} agree to "
               f"{e(facts['controlled_sgd_gap'])}." if facts["controlled_sgd_gap"] == facts["controlled_sgd_gap"]
               else ".")
            + " "
        ]  # fmt: skip
        for p in apart:
            trail = ", ".join(f"{e(v)} (step {int(k)})" for k, v in p["gaps"].items())
            lines[-1] += (
                f"In {p['optimizer']} {p['cell']} {p['layers']}-layer {'bi' if p['directions'] == 2 else 'uni'} "
                f"the difference starts at rounding and grows, logged step by logged step: {trail}. "
            )
        if apart:
            lines[-1] += (
                "That is float64 rounding (the two backends sum the same products in a different order) amplified "
                "by the training dynamics, not a different computation: the first steps agree to the last bit or "
                "two. Only Adam pairs separate here; a likely amplifier is Adam's division by the root of a running "
                "mean of squared gradients, which is tiny for weights whose gradient is near zero, so that a "
                "rounding-sized difference in such a gradient becomes a full-size difference in the update. Once "
                "apart, both runs still train: see the test accuracies."
            )
        lines += [
            "",
            f"The test accuracies are equal in {same_acc} of {len(pairs_out)} pairs (largest difference "
            f"{f(facts['controlled_max_acc_diff'])}). Median step-time ratio numpy/torch "
            f"{median([p['time_ratio'] for p in pairs_out]):.2f} at this small size (hidden "
            f"{s0['hparams'].get('model/hidden_size')}), where the per-step Python overhead of the NumPy loop and "
            "the dispatch overhead of torch both matter; part 3 measures larger sizes.",
            "",
        ]
        for optimizer in sorted({p["optimizer"] for p in pairs_out}):
            lines += [f"![controlled {optimizer}]({fig_controlled(pairs_out, optimizer, tmp)})", ""]
        link = "[controlled_report/](controlled_report/README.md)"
        lines += [f"Every run of this sweep, as `rnnlab-report` writes it: {link}.", ""]

    # 3 --------------------------------------------------------------------------------------- speed
    speed = work / "speed"
    lines += ["## 3. Speed and memory", ""]
    if (speed / "grid.json").is_file():
        grid = json.loads((speed / "grid.json").read_text())
        cells = json.loads((speed / "cells.json").read_text())["rows"]
        gen = json.loads((speed / "generation.json").read_text())
        lines += [
            "One training step of the recurrent layer (`scripts/bench_grid.py`): zero the gradients, forward over "
            f"T steps, backward with the input gradient; batch {grid['batch']}, input {grid['input']}, one layer; "
            "the NumPy network and torch's fused kernel (oneDNN on this CPU) start from the same weights, their "
            "timing blocks alternate, medians after 5 warm-up calls. Peak memory: the extra resident memory of a "
            "step (kernel peak-RSS counter reset before it). Throughput in sequences per second.",
            "",
        ]
        rows = []
        for r in grid["rows"]:
            rows.append([r["dtype"], r["hidden"], r["length"], f(r["torch_ms"], 1), f(r["numpy_ms"], 1),
                         f(r["time_ratio"], 2), f"{r['torch_seq_per_s']:,.0f}", f"{r['numpy_seq_per_s']:,.0f}",
                         f(r["torch_peak_mb"], 1), f(r["numpy_peak_mb"], 1)])  # fmt: skip
        lines += table(["dtype", "hidden", "T", "torch ms", "numpy ms", "numpy/torch", "torch seq/s", "numpy seq/s",
                        "torch MB", "numpy MB"], rows)  # fmt: skip
        lines += [f"![speed ratio]({fig_speed(grid['rows'], tmp)})", "", f"![memory]({fig_memory(grid['rows'], tmp)})",
                  ""]  # fmt: skip
        rows = [[r["cell"], r["dtype"], f(r["torch_ms"], 1), f(r["numpy_ms"], 1), f(r["time_ratio"], 2),
                 f(r["torch_peak_mb"], 1), f(r["numpy_peak_mb"], 1)] for r in cells]  # fmt: skip
        h, t = cells[0]["hidden"], cells[0]["length"]
        lines += [f"Every cell at hidden {h}, T = {t}:", ""]
        lines += table(["cell", "dtype", "torch ms", "numpy ms", "numpy/torch", "torch MB", "numpy MB"], rows)
        g = gen.get("generation", gen)
        if isinstance(g, dict) and "numpy_us_per_char" in g:
            lines += [
                f"Batch-1 generation (a char LSTM, hidden {g['hidden']}, {g['length']} characters, "
                f"`LanguageModelTask.generate`): NumPy {g['numpy_us_per_char']:.0f} µs per character, PyTorch "
                f"{g['torch_us_per_char']:.0f} µs ({g['torch_us_per_char'] / g['numpy_us_per_char']:.1f}x slower: "
                "one tiny step is all dispatch overhead for torch, while NumPy's batch-1 path is a few small "
                "matrix-vector products).",
                "",
            ]
        f32 = [r for r in grid["rows"] if r["dtype"] == "float32"]
        f64 = [r for r in grid["rows"] if r["dtype"] == "float64"]
        big32 = max(f32, key=lambda r: (r["hidden"], r["length"])) if f32 else None
        small32 = min(f32, key=lambda r: (r["hidden"], r["length"])) if f32 else None
        lines += ["What the numbers say:", ""]
        if f32:
            facts["f32_lstm"] = (min(r["time_ratio"] for r in f32), median([r["time_ratio"] for r in f32]),
                                 max(r["time_ratio"] for r in f32))  # fmt: skip
        if f64:
            facts["f64_lstm"] = (min(r["time_ratio"] for r in f64), median([r["time_ratio"] for r in f64]),
                                 max(r["time_ratio"] for r in f64))  # fmt: skip
        facts["cells"] = {(r["cell"], r["dtype"]): r["time_ratio"] for r in cells}
        facts["cells_at"] = (h, t)
        if isinstance(g, dict) and "numpy_us_per_char" in g:
            facts["generation"] = g["torch_us_per_char"] / g["numpy_us_per_char"]
        if f32:
            lines.append(
                f"- float32: NumPy/torch ranges from {min(r['time_ratio'] for r in f32):.2f} to "
                f"{max(r['time_ratio'] for r in f32):.2f} (median {median([r['time_ratio'] for r in f32]):.2f}); "
                f"{f(small32['time_ratio'], 2)} at H {small32['hidden']}, T {small32['length']} and "
                f"{f(big32['time_ratio'], 2)} at H {big32['hidden']}, T {big32['length']}. Both spend most of a "
                "large step in the same GEMMs (OpenBLAS for NumPy, oneDNN/MKL for torch); the rest is elementwise "
                "gate math, which oneDNN fuses and runs on both cores while NumPy runs one ufunc at a time."
            )
        if f64:
            lines.append(
                f"- float64: NumPy/torch median {median([r['time_ratio'] for r in f64]):.2f}: torch has no fused "
                "float64 RNN kernel on the CPU and falls back to its generic per-step implementation, while NumPy's "
                "code is the same in both dtypes."
            )
        mem = [r["numpy_peak_mb"] / r["torch_peak_mb"] for r in grid["rows"]
               if r.get("numpy_peak_mb") and r.get("torch_peak_mb")]  # fmt: skip
        if mem:
            lines.append(
                f"- memory: NumPy's peak working memory is {median(mem):.2f}x torch's (median over the grid). Both "
                "keep every timestep's gate activations for the backward pass; NumPy keeps them in pooled buffers "
                "that stay resident between steps (no page faults), torch allocates and frees per step."
            )
        lines.append("")

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
    loc = {name: code_lines(numpy_dir / f"{name}.py") for name in ("rnn", "lstm", "gru")}
    shared = {name: code_lines(numpy_dir / f"{name}.py") for name in ("stack", "net", "layers", "losses", "optim",
                                                                       "memory", "params")}  # fmt: skip
    torch_loc = code_lines(torch_dir / "recurrent.py")
    lines += ["## 6. Discussion", ""]
    lines += [
        "- **Same numbers.** With the same weights, data order and optimizer formula the NumPy backend computes "
        f"what PyTorch computes: in {facts.get('controlled_together', '-')} of {facts.get('controlled_pairs', '-')} "
        "controlled pairs (part 2, float64) every logged loss agrees to "
        f"{e(facts.get('controlled_together_gap'))} or better"
        + (
            f", and where two trajectories separate ({facts['controlled_apart']}) they agree to rounding at first and "
            "then drift apart, as chaotic float64 trajectories do"
            if facts.get("controlled_apart")
            else ""
        )
        + f". The test accuracies differ by at most {f(facts.get('controlled_max_acc_diff'))}. The original "
        f"setting's gap of {100 * facts.get('original_gap', math.nan):+.1f} points of train accuracy (part 1) is "
        "therefore the optimizer's (plain SGD against Adam over the same 20 epochs), not NumPy's.",
        speed_bullet(facts),
        "- **What autograd and fused kernels buy.** The PyTorch backend's recurrent network is "
        f"{torch_loc} lines of code (`rnnlab/models/torch/recurrent.py`) for all three cells, any depth and "
        "direction; GPU support comes with it. The NumPy cells, forward and hand-written backward side by side, are "
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
    runners = {"original": stage_original, "controlled": stage_controlled, "speed": stage_speed,
               "vanishing": stage_vanishing, "char_lm": stage_char_lm}  # fmt: skip
    for stage in stages:
        if stage == "report":
            continue
        print(f"study: {stage}", flush=True)
        t0 = time.perf_counter()
        runners[stage](args.work, args.quick)
        elapsed[stage] = time.perf_counter() - t0
        timing_file.write_text(json.dumps(elapsed, indent=1))
    if "report" in stages:
        print("study: report", flush=True)
        write_report(args.work, args.out, args.quick, {k: elapsed[k] for k in runners if k in elapsed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
