"""Three cell experiments, each a multirun preset on both backends and a report under experiments/<name>/:

* ``irnn_adding``: the IRNN (Le et al. 2015: ReLU, W_hh = I, zero biases) against a tanh RNN and an LSTM on the
  adding problem (conf/experiment/irnn_adding.yaml, 6 jobs);
* ``forget_bias``: the LSTM's forget-gate bias 1 against 0 (Jozefowicz et al. 2015) on the adding problem and the
  copy task (conf/experiment/forget_bias.yaml, 8 jobs);
* ``grad_clipping``: gradient-norm clipping on against off for a ReLU RNN trained by SGD: loss curves and the
  gradient norm before clipping (conf/experiment/grad_clipping.yaml, 4 jobs).

    python scripts/cell_experiments.py irnn_adding       # the sweep into outputs/cell_experiments/irnn_adding/<time>,
                                                          # then experiments/irnn_adding/README.md and its figures
    python scripts/cell_experiments.py all               # the three, one after the other
    python scripts/cell_experiments.py irnn_adding --from-sweep outputs/cell_experiments/irnn_adding/<time>
                                                          # the report only, from runs already there
    python scripts/cell_experiments.py irnn_adding --smoke            # tiny sizes, end to end, into a temp dir
    python scripts/cell_experiments.py irnn_adding --probe            # the timing probe: CPU time per step and
                                                          # per validation at several lengths, extrapolated
    python scripts/cell_experiments.py grad_clipping optimizer.lr=0.02   # extra overrides go to every job

The jobs run one after the other (``--jobs 2``: two at a time through Hydra's joblib launcher; each job uses one
thread, ``threads=1`` in the presets). A failed job (a diverged run) is part of the result: the report lists it
with the step it stopped at. The report reads every run back the way rnnlab-report does (rnnlab.report.collect:
summary.json, csv/metrics.csv, the resolved config); re-running it on the same runs gives the same files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROBE_MODULE = "_rnnlab_cell_probe"
APART = 1e-3  # two backends' training losses "agree" while their relative difference stays below this


# -------------------------------------------------------------------------------------------------- studies
@dataclass(frozen=True)
class Study:
    name: str  # conf/experiment/<name>.yaml and experiments/<name>/
    title: str
    intro: str
    smoke: tuple[str, ...]  # overrides of the smoke run (tiny sizes), passed to every job
    probe_lengths: tuple[int, ...]  # data.length values of the timing probe
    compared: str  # what the arms differ in, for the report's text
    budget: str  # how the preset's length and steps were chosen (the timing probe; fixed when the preset was made)


SMOKE_COMMON = ("model.hidden_size=8", "data.num_train=128", "data.num_val=64", "data.num_test=64",
                "trainer.max_steps=12", "trainer.val_check_interval=4", "trainer.log_every_n_steps=2")  # fmt: skip

STUDIES = {
    s.name: s
    for s in (
        Study(
            name="irnn_adding",
            title="The IRNN against a tanh RNN and an LSTM on the adding problem",
            intro=(
                "Le, Jaitly and Hinton (2015), *A Simple Way to Initialize Recurrent Networks of Rectified Linear "
                "Units*: a plain RNN with ReLU units whose recurrent matrix starts as the identity and whose biases "
                "start at 0 (the IRNN; `model=rnn model.nonlinearity=relu model.init=identity`) learns long-range "
                "dependencies, the adding problem among them, about as well as an LSTM. Here the three networks "
                "train on the same adding problem (sum the two marked values of a sequence) with the same "
                "optimizer, data order and number of steps, each on both backends."
            ),
            smoke=(*SMOKE_COMMON, "data.length=6"),
            probe_lengths=(50, 100, 150, 200, 400),
            compared="the network (`setting=irnn|tanh_rnn|lstm`)",
            budget=(
                "The length and the steps come from the timing probe (`python scripts/cell_experiments.py "
                "irnn_adding --probe`: CPU time per training step with one thread, the median of 20 steps after 5 "
                "of warm-up, measured on 6 Dec 2026 while other jobs shared the 2 cores). The LSTM is the slowest: "
                "65 / 145 / 311 ms per step on torch and 62 / 103 / 253 ms on NumPy at T = 100 / 200 / 400, and "
                "108 ms (torch) and 69 ms (NumPy) at T = 150, so 8,000 steps plus a validation every 200 steps take "
                "about 14.7 min there, while at T = 200 only about 6,000 steps fit in 15 min. The IRNN and the tanh "
                "RNN need 16-35 ms per step at T = 150 (2-5 min for the same 8,000 steps). How many steps the "
                "networks need is what the runs measure; a short learning probe at T = 30 (Adam, lr 1e-3) saw the "
                "IRNN leave the baseline after about 1,500 steps, and assuming that this grows about linearly with "
                "T, 150 is the longest length whose need (about 7,500 steps) the 15 minutes still cover. Adam with "
                "lr 1e-3 rather than Le et al.'s SGD: at T = 30 it learnt faster than lr 1e-4, and at T = 150 "
                "neither lr 1e-3 nor 3e-4 diverged in 600 steps (at T = 400 the IRNN diverged in its first step)."
            ),
        ),
        Study(
            name="forget_bias",
            title="The LSTM's forget-gate bias: 1 against 0",
            intro=(
                "Jozefowicz, Zaremba and Sutskever (2015), *An Empirical Exploration of Recurrent Network "
                "Architectures*: adding 1 to the bias of the LSTM's forget gate (so the cell starts out keeping "
                "its state) closes the gap between the LSTM and the GRU. Here an LSTM with torch's "
                "initialization, with `model.forget_bias=0` and `model.forget_bias=1`, on the adding problem and "
                "the copy task, each on both backends."
            ),
            smoke=(*SMOKE_COMMON, "data.length=5"),
            probe_lengths=(50, 100, 200),
            compared="`model.forget_bias` (0 or 1)",
            budget=(
                "Lengths and steps from the timing probe (`python scripts/cell_experiments.py forget_bias --probe "
                "--budget-min 5`: CPU time per step, one thread, 6 Dec 2026, the cores shared): hidden 128, the "
                "adding problem at T = 100 takes 81 ms per step on torch and 71 ms on NumPy, so 3,500 steps are "
                "about 5 min. In the vanishing-gradient experiments (Adam lr 0.002, 1,570 steps) the LSTM with "
                "torch's initialization stayed at the baseline on the adding problem at T = 100, and on the copy "
                "task reached 0.385 at delay 20 and chance at delay 50. A first run of this study at delay 50 "
                "(5,000 steps) left both arms at chance, so the copy task runs at delay 20 (31 steps per sequence, "
                "about half the time per step of delay 50): 8,000 steps, about 5 min."
            ),
        ),
        Study(
            name="grad_clipping",
            title="Gradient clipping on and off for a ReLU RNN",
            intro=(
                "Pascanu, Mikolov and Bengio (2013), *On the difficulty of training recurrent neural networks*: "
                "rescaling the gradient when its norm exceeds a threshold keeps one exploding gradient from "
                "throwing the weights far away. Here a ReLU RNN (the IRNN's initialization) trained by plain SGD on "
                "the adding problem, with the total gradient norm clipped at 1 (`trainer.gradient_clip_val=1`) "
                "and without clipping (`trainer.gradient_clip_val=null`), on both backends; `train/grad_norm` is "
                "the gradient norm before clipping (rnnlab.callbacks.GradientNorm)."
            ),
            smoke=(*SMOKE_COMMON, "data.length=6"),
            probe_lengths=(50, 100, 200),
            compared="`trainer.gradient_clip_val` (1 or null: off)",
            budget=(
                "Length, learning rate and steps from short probes (6 Dec 2026, the cores shared): at T = 100 the "
                "unclipped run with lr 0.01 diverges in its first step (training loss 4e7, stopped by the divergence "
                "guard), which leaves no curve to compare, so T = 50, where it survives its first steps' gradient "
                "norm of about 13,000. The timing probe (`python scripts/cell_experiments.py grad_clipping --probe "
                "--budget-min 5`) gives 15.5 ms per step on torch and 8.6 ms on NumPy at T = 50, so 20,000 steps "
                "take about 5 min."
            ),
        ),
    )
}


# ------------------------------------------------------------------------------------------------ running
def rel(path: Path) -> str:
    """A path relative to the repository when it is inside it (for the report's text), else absolute."""
    path = Path(path).absolute()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def job_overrides(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """``data.KEY=value`` and ``task.KEY=value`` as ``KEY=choice(value)``: a one-value sweep, applied to every job
    but not to the sweep's base config. The forget_bias preset picks its task and data in ``setting`` (swept), so
    its base config has the default data (shakespeare), on which ``data.length`` does not exist (the same problem
    rnnlab.cli.defer_swept_group_keys solves for a group swept on the command line). Other overrides unchanged."""
    out = []
    for arg in overrides:
        key, sep, value = arg.partition("=")
        plain = sep and key.startswith(("data.", "task.")) and "(" not in value and "," not in value
        out.append(f"{key}=choice({value})" if plain else arg)
    return out


def run_sweep(study: Study, sweep: Path, overrides: list[str], jobs: int) -> int:
    """``rnnlab-train experiment=<name>`` into ``sweep``; returns its exit status (1 when a job failed)."""
    cmd = [sys.executable, "-m", "rnnlab", f"experiment={study.name}", f"hydra.sweep.dir={sweep}"]
    if jobs > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    cmd += job_overrides(overrides)
    sweep.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"[{study.name}] {shlex.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    log = sweep.parent / f"{sweep.name}.log"
    with log.open("w") as fh:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    print(f"[{study.name}] sweep finished in {(time.perf_counter() - t0) / 60:.1f} min, exit {done.returncode} "
          f"(log {rel(log)})", flush=True)  # fmt: skip
    return done.returncode


# ---------------------------------------------------------------------------------------------- the runs
@dataclass
class Run:
    cfg: dict[str, Any]
    row: dict[str, Any]  # rnnlab.report's row: status, backend, metrics, step_ms, wall_s, error, path
    curves: Any  # DataFrame: step, epoch, tag, value
    problem: str
    arm: str
    metric: str  # "mse" or "acc"
    mode: str  # "min" or "max"
    solved: float  # the threshold of "solved" on val/<metric>

    @property
    def backend(self) -> str:
        return str(self.row["backend"])

    def series(self, tag: str) -> Any:
        c = self.curves[self.curves["tag"] == tag].sort_values("step", kind="stable")
        return c.groupby("step")["value"].last()


def problem_of(cfg: dict[str, Any]) -> tuple[str, str, str, float]:
    """(label, metric, mode, threshold of "solved") of a run's data."""
    data = cfg["data"]
    if data["name"] == "adding":
        return f"adding, T = {data['length']}", "mse", "min", 0.01
    if data["name"] == "copy":
        return f"copy, delay {data['length']}", "acc", "max", 0.99
    return str(data["name"]), "loss", "min", 0.0


def arm_of(study: str, cfg: dict[str, Any]) -> str:
    """What a run's arm is, in words, from its resolved config (not from the sweep's directory names)."""
    m = cfg["model"]
    if study == "forget_bias":
        return f"forget bias {float(m.get('forget_bias', 0.0)):g}"
    if study == "grad_clipping":
        clip = cfg["trainer"].get("gradient_clip_val")
        return "no clipping" if not clip else f"clip norm {float(clip):g}"
    if m["cell"] == "rnn":
        if m.get("init") == "identity" and m.get("nonlinearity") == "relu":
            return "IRNN"
        name = f"{m.get('nonlinearity', 'tanh')} RNN"
        return name if m.get("init", "default") == "default" else f"{name} ({m['init']} init)"
    name = str(m["cell"]).upper()
    if float(m.get("forget_bias", 0.0)):
        name += f" (forget bias {float(m['forget_bias']):g})"
    return name if m.get("init", "default") == "default" else f"{name} ({m['init']} init)"


def load_runs(study: Study, sweep: Path) -> list[Run]:
    from rnnlab.report.collect import collect_runs, read_config

    runs_df, curves = collect_runs([sweep])
    runs = []
    for row in runs_df.to_dict("records"):
        cfg, _ = read_config(Path(row["path"]))
        problem, metric, mode, solved = problem_of(cfg)
        runs.append(Run(cfg, row, curves[curves["run"] == row["run"]], problem, arm_of(study.name, cfg),
                        metric, mode, solved))  # fmt: skip
    # problems by data and length, arms in the sweep's order (the job number Hydra puts first in each directory)
    first_job: dict[str, int] = {}
    for run in sorted(runs, key=job_number):
        first_job.setdefault(run.arm, job_number(run))
    order = {"numpy": 0, "torch": 1}
    runs.sort(key=lambda r: (r.cfg["data"]["name"], int(r.cfg["data"].get("length") or 0), first_job[r.arm],
                             order.get(r.backend, 2)))  # fmt: skip
    return runs


def job_number(run: Run) -> int:
    found = re.match(r"(\d+)_", Path(run.row["path"]).name)
    return int(found.group(1)) if found else 0


def steps_to_solve(run: Run) -> int | None:
    """The number of optimizer steps after which val/<metric> first passed the threshold (Lightning logs a
    validation after ``step + 1`` updates at step ``step``), or None."""
    val = run.series(f"val/{run.metric}")
    hit = val[val < run.solved] if run.mode == "min" else val[val >= run.solved]
    return int(hit.index[0]) + 1 if len(hit) else None


def trained_steps(run: Run) -> int:
    last = run.row.get("last_step")
    return int(last) if last is not None and not (isinstance(last, float) and math.isnan(last)) else 0


def diverged_at(run: Run) -> int | None:
    found = re.search(r"divergence: .* at step (\d+)", str(run.row.get("error") or ""))
    return int(found.group(1)) if found else None


def fmt(value: Any, digits: int = 4) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def completed(run: Run) -> bool:
    return run.row["status"] == "completed"


def outcome(run: Run) -> str:
    if run.row["status"] == "completed":
        return "completed"
    step = diverged_at(run)
    if step is not None:
        return f"diverged at step {step}"
    return str(run.row["status"])


def solved_text(run: Run) -> str:
    n = steps_to_solve(run)
    if n is not None:
        return f"{n:,}"
    return f"not in {trained_steps(run):,}" if completed(run) else "-"


def agreement(a: Run, b: Run) -> tuple[str, str, str]:
    """(steps over which the two backends' training losses agree to APART (relative), the largest absolute
    difference over the first 100 steps, the difference of the test metric numpy - torch)."""
    la, lb = a.series("train/loss"), b.series("train/loss")
    common = la.index.intersection(lb.index)
    if not len(common):
        return "-", "-", "-"
    x, y = la.loc[common], lb.loc[common]
    diff = (x - y).abs()
    relative = diff / x.abs().combine(y.abs(), max).clip(lower=1e-12)
    apart = relative[relative > APART]
    if len(apart):
        before = common[common < apart.index[0]]
        together = f"{int(before[-1]) + 1:,}" if len(before) else "0"
        together += f" (apart from step {int(apart.index[0]) + 1:,})"
    else:
        together = f"all {int(common[-1]) + 1:,}"
    early = diff[common < 100]
    first = f"{early.max():.1e}" if len(early) else "-"
    ta, tb = a.row.get(f"test/{a.metric}"), b.row.get(f"test/{b.metric}")
    test = f"{float(ta) - float(tb):+.1e}" if ta is not None and tb is not None else "-"
    if test == "+nan":
        test = "-"
    return together, first, test


def grad_stats(run: Run) -> tuple[str, str]:
    """(the largest gradient norm before clipping of any step, the median of the logged norms over the second half
    of the run), formatted; "-" without train/grad_norm."""
    biggest, at = run.series("train/grad_norm_max"), run.series("train/grad_norm")
    if not len(at):
        return "-", "-"
    late = at[at.index >= at.index[-1] / 2]
    return f"{biggest.max():.3g}", f"{late.median():.3g}"


def summary_lines(runs: list[Run]) -> list[str]:
    """One bullet per problem and arm: solved (after how many steps, per backend), diverged, or the best value."""
    lines = []
    for problem in dict.fromkeys(r.problem for r in runs):
        mine = [r for r in runs if r.problem == problem]
        lines.append(f"- {problem}:")
        for arm in dict.fromkeys(r.arm for r in mine):
            parts = []
            for run in (r for r in mine if r.arm == arm):
                n = steps_to_solve(run)
                if n is not None:
                    parts.append(f"solved after {n:,} steps ({run.backend})")
                elif diverged_at(run) is not None:
                    parts.append(f"diverged at step {diverged_at(run):,} ({run.backend})")
                elif run.row["status"] != "completed":
                    parts.append(f"{run.row['status']} ({run.backend})")
                else:
                    best = run.row.get(f"val/{run.metric}_best")
                    parts.append(f"not solved in {trained_steps(run):,} steps, best val {run.metric} {fmt(best)} "
                                 f"({run.backend})")  # fmt: skip
            lines.append(f"  - {arm}: " + "; ".join(parts))
    return lines


# ------------------------------------------------------------------------------------------------ figures
STYLE = {"torch": "-", "numpy": "--"}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def curves_figure(runs: list[Run], problem: str, path: Path) -> None:
    from rnnlab.plots import new_figure

    mine = [r for r in runs if r.problem == problem]
    arms = list(dict.fromkeys(r.arm for r in mine))
    colours = {arm: f"C{i}" for i, arm in enumerate(arms)}
    fig = new_figure(11, 3.8)
    ax_loss, ax_val = fig.subplots(1, 2)
    metric = mine[0].metric
    for run in mine:
        label = f"{run.arm}, {run.backend}"
        loss = run.series("train/loss")
        ax_loss.plot(loss.index + 1, loss.values, STYLE.get(run.backend, ":"), color=colours[run.arm], lw=0.9,
                     label=label)  # fmt: skip
        val = run.series(f"val/{metric}")
        ax_val.plot(val.index + 1, val.values, STYLE.get(run.backend, ":"), color=colours[run.arm], lw=1.2,
                    marker="." if len(val) < 30 else None, label=label)  # fmt: skip
    ax_loss.set_yscale("log")
    ax_loss.set_title(f"{problem}: training loss (every logged step)", fontsize=10)
    ax_val.set_title(f"{problem}: val/{metric}", fontsize=10)
    base = mine[0].series("val/mse_baseline") if metric == "mse" else None
    if metric == "mse":
        ax_val.set_yscale("log")
        if base is not None and len(base):
            ax_val.axhline(float(base.iloc[-1]), color="grey", lw=0.8, ls=":", label="constant-mean baseline")
    if metric == "acc" and mine[0].cfg["data"].get("num_symbols"):
        chance = 1 / float(mine[0].cfg["data"]["num_symbols"])
        ax_val.axhline(chance, color="grey", lw=0.8, ls=":", label=f"chance ({chance:g})")
    ax_val.axhline(mine[0].solved, color="black", lw=0.8, ls="-.", label=f"solved ({mine[0].solved:g})")
    for ax in (ax_loss, ax_val):
        ax.set_xlabel("optimizer step")
        ax.grid(True, which="both", alpha=0.3)
    ax_val.legend(fontsize=7)
    fig.savefig(path)


def grad_figure(runs: list[Run], problem: str, path: Path) -> bool:
    from rnnlab.plots import new_figure

    mine = [r for r in runs if r.problem == problem and len(r.series("train/grad_norm"))]
    if not mine:
        return False
    arms = list(dict.fromkeys(r.arm for r in runs if r.problem == problem))
    colours = {arm: f"C{i}" for i, arm in enumerate(arms)}
    fig = new_figure(11, 3.8)
    ax_max, ax_at = fig.subplots(1, 2)
    for run in mine:
        label = f"{run.arm}, {run.backend}"
        for ax, tag in ((ax_max, "train/grad_norm_max"), (ax_at, "train/grad_norm")):
            s = run.series(tag)
            ax.plot(s.index + 1, s.values, STYLE.get(run.backend, ":"), color=colours[run.arm], lw=0.9, label=label)
    every = mine[0].cfg["trainer"].get("log_every_n_steps") or 10
    ax_max.set_title(f"{problem}: largest gradient norm of each {every} steps", fontsize=10)
    ax_at.set_title(f"{problem}: gradient norm at the logged step", fontsize=10)
    for ax in (ax_max, ax_at):
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("total gradient 2-norm, before clipping")
        ax.grid(True, which="both", alpha=0.3)
    ax_at.legend(fontsize=7)
    fig.savefig(path)
    return True


# ------------------------------------------------------------------------------------------------- report
def threads_text(threads: Any) -> str:
    return "the libraries' default number of threads" if not threads else f"{threads} thread" + "s" * (threads != 1)


def setting_lines(runs: list[Run]) -> list[str]:
    """One bullet per problem with what every run of it shares (read from the resolved configs)."""
    lines = []
    for problem in dict.fromkeys(r.problem for r in runs):
        cfg = next(r.cfg for r in runs if r.problem == problem)
        d, m, o, t = cfg["data"], cfg["model"], cfg["optimizer"], cfg["trainer"]
        opt = f"{o['name']} (lr {o['lr']:g}" + (f", momentum {o['momentum']:g}" if o.get("momentum") else "") + ")"
        clip = {r.cfg["trainer"].get("gradient_clip_val") for r in runs if r.problem == problem}
        clip_text = " or ".join("off" if not c else f"norm {float(c):g}" for c in sorted(clip, key=lambda c: c or 0))
        val_every = t.get("val_check_interval")
        lines.append(
            f"- **{problem}** (`task={cfg['task']['name']} data={d['name']} data.length={d['length']}`): "
            f"{d['num_train']:,} training sequences, {d['num_val']:,} validation, {d['num_test']:,} test, batch "
            f"{d['batch_size']}; hidden size {m['hidden_size']}, {opt}, gradient clipping {clip_text}, "
            f"{t['max_steps']:,} steps, validation every {val_every} steps, precision {t['precision']}, seed "
            f"{cfg.get('seed')}, {threads_text(cfg.get('threads'))} per job."
        )
    return lines


def write_report(study: Study, runs: list[Run], sweep: Path, out: Path, command: str, smoke: bool) -> None:
    from rnnlab.atomic import replace_dir

    problems = list(dict.fromkeys(r.problem for r in runs))
    done = [r for r in runs if r.row["status"] == "completed"]
    wall = sum(float(r.row["wall_s"]) for r in runs if not math.isnan(float(r.row.get("wall_s") or math.nan)))
    finished = sorted(
        json.loads((Path(r.row["path"]) / "summary.json").read_text()).get("finished_at", "")
        for r in runs
        if (Path(r.row["path"]) / "summary.json").is_file()
    )
    with replace_dir(out) as tmp:
        lines = [f"# {study.title}", ""]
        if smoke:
            lines += ["**A smoke run at tiny sizes: it shows that the command works; its numbers mean nothing.**", ""]
        lines += [
            study.intro,
            "",
            f"Regenerate (runs and this page): `{command}`; the sweep alone is `rnnlab-train experiment={study.name}`"
            f" (conf/experiment/{study.name}.yaml), and `python scripts/cell_experiments.py {study.name} "
            f"--from-sweep <sweep dir>` rewrites this page from runs already there. These runs: `{rel(sweep)}`, "
            f"{len(runs)} jobs ({len(done)} completed), {wall / 60:.1f} min of training and testing in all"
            + (f", the last finished {finished[-1][:16].replace('T', ' ')} UTC" if finished and finished[-1] else "")
            + ".",
            "",
            "## Setting",
            "",
            f"Compared: {study.compared}, each on both backends (`model.backend=numpy,torch`: the same initial "
            "weights, data order and optimizer formulas).",
            "",
            *setting_lines(runs),
            "",
            "Test metric of the best validation checkpoint; *steps to solve*: the optimizer steps after which the "
            "validation metric first passed the threshold (MSE < 0.01 on the adding problem, where predicting the "
            "constant mean scores about 0.167; recall accuracy >= 0.99 on the copy task, where chance is 1/8), "
            "read at every validation, so to within the validation interval.",
            "",
            study.budget,
            "",
            "## Summary",
            "",
            *summary_lines(runs),
            "",
            "## Results",
            "",
            "| problem | arm | backend | test metric | best val | steps to solve | final train loss | largest "
            "gradient norm | median gradient norm, 2nd half | outcome | median step | wall |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in runs:
            test = run.row.get(f"test/{run.metric}")
            best = run.row.get(f"val/{run.metric}_best")
            loss = run.series("train/loss")
            wall_run = float(run.row.get("wall_s") or math.nan)
            biggest, typical = grad_stats(run)
            lines.append(
                f"| {run.problem} | {run.arm} | {run.backend} | {run.metric} {fmt(test)} | {fmt(best)} | "
                f"{solved_text(run)} | {fmt(loss.iloc[-1] if len(loss) else None)} | {biggest} | {typical} | "
                f"{outcome(run)} | {fmt(run.row.get('step_ms'), 1)} ms | "
                + ("-" if math.isnan(wall_run) else f"{wall_run / 60:.1f} min")
                + " |"
            )
        lines += [
            "",
            "Median step and wall time are wall-clock and move with the machine's load (other processes shared the "
            "2 cores at times); the steps, losses and metrics do not.",
            "",
            "## NumPy against torch",
            "",
            "The two backends start from the same weights and see the same batches, so their curves coincide until "
            f"float32 rounding differences grow (relative difference of the logged training loss above {APART:g}).",
            "",
            "| problem | arm | training losses agree over steps | max abs difference, first 100 steps | "
            "test metric numpy - torch |",
            "|---|---|---|---|---|",
        ]
        for problem in problems:
            for arm in dict.fromkeys(r.arm for r in runs if r.problem == problem):
                pair = {r.backend: r for r in runs if r.problem == problem and r.arm == arm and completed(r)}
                if "numpy" in pair and "torch" in pair:
                    together, first, test = agreement(pair["numpy"], pair["torch"])
                    lines.append(f"| {problem} | {arm} | {together} | {first} | {test} |")
        lines += ["", "## Figures", ""]
        for problem in problems:
            name = f"curves_{slug(problem)}.png"
            curves_figure(runs, problem, tmp / name)
            lines += [f"![{problem}: curves]({name})", ""]
            grads = f"grad_norm_{slug(problem)}.png"
            if grad_figure(runs, problem, tmp / grads):
                lines += [f"![{problem}: gradient norms]({grads})", ""]
        lines += [
            "Solid lines: torch; dashed: NumPy. Gradient norms are the total 2-norm over every parameter before "
            "clipping (`train/grad_norm`, written every `trainer.log_every_n_steps`; `train/grad_norm_max`: the "
            "largest of the steps in between).",
        ]
        failed = [r for r in runs if r.row["status"] != "completed"]
        if failed:
            lines += ["", "## Runs that did not complete", ""]
            lines += [f"- `{rel(Path(r.row['path']))}`: {r.row.get('error') or r.row['status']}" for r in failed]
        (tmp / "README.md").write_text("\n".join(lines) + "\n")
    print(f"[{study.name}] wrote {rel(out)}/README.md ({len(runs)} runs)", flush=True)


# -------------------------------------------------------------------------------------------------- probe
def install_probe_clock() -> None:
    """Register ``_rnnlab_cell_probe.CpuClock``: a callback that writes ``probe.json`` into each run directory with
    the process CPU time of every training step and of every validation (CPU time, not wall time: other processes
    on the machine slow the wall clock, not the work a step does with one thread)."""
    import lightning as L

    class CpuClock(L.Callback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.walls: list[float] = []
            self.vals: list[float] = []
            self._t = (0.0, 0.0)
            self._v = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
            self._t = (time.process_time(), time.perf_counter())

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
            self.steps.append(time.process_time() - self._t[0])
            self.walls.append(time.perf_counter() - self._t[1])

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            self._v = time.process_time()

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                self.vals.append(time.process_time() - self._v)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            record = {"steps": self.steps, "walls": self.walls, "vals": self.vals}
            (Path(trainer.default_root_dir) / "probe.json").write_text(json.dumps(record))

    module = types.ModuleType(PROBE_MODULE)
    module.CpuClock = CpuClock  # type: ignore[attr-defined]
    sys.modules[PROBE_MODULE] = module


def preset_budget(study: Study, setting: str | None) -> tuple[int, int]:
    """(max_steps, validation interval) of the full preset (for one setting of a sweep that picks it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rnnlab.cli import config_dir

    GlobalHydra.instance().clear()  # the probe's sweep ran in this process
    overrides = [f"experiment={study.name}"] + ([f"setting={setting}"] if setting else [])
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return int(cfg.trainer.max_steps), int(cfg.trainer.val_check_interval)


def probe(study: Study, lengths: list[int], steps: int, warmup: int, budget_min: float, work: Path,
          overrides: list[str]) -> None:  # fmt: skip
    """Run the preset's sweep at each length for ``warmup + steps`` steps and one validation, in this process,
    timing every step's CPU time; print the median per job and what a full run costs at that length."""
    install_probe_clock()
    sweep = work / f"probe-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    argv = [
        f"experiment={study.name}",
        f"hydra.sweep.dir={sweep}",
        f"data.length={','.join(map(str, lengths))}",
        f"trainer.max_steps={warmup + steps}",
        f"trainer.val_check_interval={warmup + steps}",
        "run_test=false",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        f"+callbacks.cpu_clock._target_={PROBE_MODULE}.CpuClock",
        *job_overrides(overrides),
    ]  # fmt: skip
    from rnnlab.cli import train_main

    saved = sys.argv
    sys.argv = ["rnnlab-train", *argv]
    try:
        train_main()
    except SystemExit as done:
        if done.code not in (None, 0):
            print(f"probe: the sweep ended with exit status {done.code} (see above)")
    finally:
        sys.argv = saved
    if not sweep.is_dir():
        raise SystemExit(f"probe: no runs in {sweep}")
    from rnnlab.report.collect import read_config

    rows = []
    for job in sorted(sweep.iterdir()):
        if not (job / "probe.json").is_file():
            continue
        cfg, _ = read_config(job)
        rec = json.loads((job / "probe.json").read_text())
        cpu = statistics.median(rec["steps"][warmup:]) if len(rec["steps"]) > warmup else math.nan
        wall = statistics.median(rec["walls"][warmup:]) if len(rec["walls"]) > warmup else math.nan
        val = rec["vals"][-1] if rec["vals"] else 0.0
        max_steps, every = preset_budget(study, _setting_of(job))
        full = max_steps * cpu + (max_steps // every + 1) * val  # + 1: the test split, about one validation
        fits = int(budget_min * 60 / (cpu + val / every))
        rows.append((arm_of(study.name, cfg), problem_of(cfg)[0], cfg["model"]["backend"], cpu * 1e3, wall * 1e3,
                     val, max_steps, full / 60, fits, (cfg["data"]["name"], int(cfg["data"]["length"]))))  # fmt: skip
    print(f"\ntiming probe of {study.name}: median over {steps} steps after {warmup} of warm-up, one thread; "
          f"full run = the preset's max_steps x step + its validations (and the test) in CPU time")  # fmt: skip
    print(f"{'arm':<22} {'problem':<18} {'backend':<7} {'cpu ms':>8} {'wall ms':>8} {'val s':>6} {'steps':>7} "
          f"{'full min':>8} {f'steps in {budget_min:g} min':>16}")  # fmt: skip
    for r in sorted(rows, key=lambda r: (r[9], r[0], r[2])):
        print(f"{r[0]:<22} {r[1]:<18} {r[2]:<7} {r[3]:8.1f} {r[4]:8.1f} {r[5]:6.2f} {r[6]:7d} {r[7]:8.1f} {r[8]:16,d}")
    print(f"(runs in {rel(sweep)})")


def _setting_of(job: Path) -> str | None:
    """The ``setting`` choice Hydra recorded for a job (.hydra/hydra.yaml), or None."""
    import yaml

    path = job / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    hydra = yaml.safe_load(path.read_text()).get("hydra", {})
    choice = (hydra.get("runtime") or {}).get("choices", {}).get("setting")
    return None if choice in (None, "null") else str(choice)


# --------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("study", choices=[*STUDIES, "all"])
    p.add_argument("overrides", nargs="*", help="key=value overrides passed to every job (rnnlab-train's)")
    p.add_argument("--from-sweep", type=Path, help="an existing multirun directory: write the report only")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, end to end, into a temporary directory (with "
                   "--from-sweep: the sweep was a smoke run; either way the report is marked and kept out of "
                   "experiments/)")  # fmt: skip
    p.add_argument("--out", type=Path, help="the report directory (default experiments/<study>; with all: "
                   "<out>/<study>)")  # fmt: skip
    p.add_argument("--work", type=Path, help="where sweeps go (default outputs/cell_experiments; with --smoke a "
                   "new temporary directory)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="jobs at a time (joblib launcher when > 1)")
    p.add_argument("--probe", action="store_true", help="the timing probe instead of the experiment")
    p.add_argument("--probe-lengths", help="comma-separated data.length values (default: the study's)")
    p.add_argument("--probe-steps", type=int, default=20)
    p.add_argument("--probe-warmup", type=int, default=5)
    p.add_argument("--budget-min", type=float, default=15.0, help="the probe's time budget per run, in minutes")
    args = p.parse_intermixed_args(argv)
    if args.from_sweep is not None and (args.study == "all" or args.probe):
        p.error("--from-sweep takes one study and no --probe (with --smoke: the sweep was a smoke run)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(STUDIES) if args.study == "all" else [args.study]
    if args.work is None:
        fresh = args.smoke and args.from_sweep is None
        smoke_dir = Path(tempfile.mkdtemp(prefix="rnnlab-cells-smoke-")) if fresh else None
        args.work = smoke_dir or ROOT / "outputs" / "cell_experiments"
    status = 0
    for name in names:
        study = STUDIES[name]
        if args.probe:
            lengths = [int(x) for x in args.probe_lengths.split(",")] if args.probe_lengths else study.probe_lengths
            probe(study, lengths, args.probe_steps, args.probe_warmup, args.budget_min, args.work / name,
                  list(args.overrides))  # fmt: skip
            continue
        if args.out is None:
            out = (args.work / name / "report") if args.smoke else ROOT / "experiments" / name
        else:
            out = args.out / name if args.study == "all" else args.out
        if args.smoke and (ROOT / "experiments") in [out.absolute(), *out.absolute().parents]:
            raise SystemExit(f"cell_experiments: a smoke report does not go under experiments/ ({out})")
        flags = [*(["--smoke"] if args.smoke else []), *(["--jobs", str(args.jobs)] if args.jobs > 1 else [])]
        command = "python scripts/cell_experiments.py " + shlex.join([name, *flags, *args.overrides])
        if args.from_sweep is not None:
            sweep = args.from_sweep
        else:
            sweep = args.work / name / time.strftime("%Y-%m-%d_%H-%M-%S")
            overrides = [*(study.smoke if args.smoke else ()), *args.overrides]
            if run_sweep(study, sweep, overrides, args.jobs) not in (0, 1):  # 1: some jobs failed (diverged)
                status = 1
        if not sweep.is_dir():
            print(f"cell_experiments: no sweep directory {sweep}", file=sys.stderr)
            status = 1
            continue
        from rnnlab.report.collect import ReportError

        try:
            runs = load_runs(study, sweep)
        except ReportError as err:
            print(f"cell_experiments: {err}", file=sys.stderr)
            status = 1
            continue
        write_report(study, runs, sweep, out, command, args.smoke)
    return status


if __name__ == "__main__":
    sys.exit(main())
