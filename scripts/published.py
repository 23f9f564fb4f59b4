"""rnnlab against published results on the JSB chorales: the polyphonic-music tables of Chung et al. (2014) and
Bai, Kolter & Koltun (2018), and the LSTM variant study of Greff et al. (2017). Writes
experiments/published/README.md and its figures.

    bash scripts/reproduce_published.sh                         # every stage (2.8 hours on 2 cores)
    python scripts/published.py --stages search,tables --jobs 2  # the tables on the standard split (51 min)
    python scripts/published.py --stages report                  # the report of what has finished so far
    python scripts/published.py --quick --jobs 2                 # every stage in miniature (6.0 min)

``--quick``: 3 epochs of 5 batches, seeds 1-2 (1 in the noise and embedded stages), 2 candidates per search, 2
trials per variant, the embedded split from the first 40 chorales, into outputs/published_quick (its report in
outputs/published_quick/report); it exercises every stage, its numbers mean nothing.

Stages (each runs only what is missing: a finished run is skipped, an interrupted one resumes from its last
checkpoint, so a long study can be run in parts; stop it with Ctrl-C at any time):

* ``search``: the learning rate of each ~20K-parameter preset of Chung et al. (``experiment=jsb_chung_{rnn,gru,
  lstm}``) and of the ~300K-parameter tanh RNN (``experiment=jsb_rnn``), chosen on val/nll from seeded
  log-uniform candidates (seed 1, NumPy backend; Chung et al. drew 10 log-uniform candidates too);
* ``tables``: every preset of both settings with its chosen learning rate, seeds 1-3, both backends, on the
  standard split (``--data-path``); the Bai LSTM and GRU presets (``jsb_lstm``, ``jsb_gru``) keep their values;
* ``ordering``: the Bai GRU and LSTM each with its own learning rate (Adam, 5 log-uniform candidates in
  10^[-3.5, -2] and the presets' own 3e-3, seed 1, NumPy; then the chosen rate on every seed), to test whether
  the tables' GRU/LSTM order holds when neither cell keeps a rate tuned for the other;
* ``noise``: the Chung presets again with their weight noise (``model.weight_noise=0.075``), seeds and backends as
  in the tables: the effect of the one part of their protocol the tables leave out;
* ``embedded``: the same configurations on the split rnnlab embeds (music21's chorales, no data.path);
* ``variants``: the nine LSTM variants, each with the same seeded random trials of learning rate and hidden
  size (log-uniform, as Greff et al. drew them), NumPy backend, on the standard split;
* ``report``: experiments/published/README.md and figures from whatever has finished.

Every run is one ``rnnlab-train`` process on one thread (``threads=1``), ``--jobs`` at a time, in its own
directory under ``--work`` (default outputs/published); a run's log is beside its directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STANDARD = ROOT.parent / "shared" / "data" / "jsb_chorales" / "jsb-chorales-quarter.json"
STAGES = ("search", "tables", "ordering", "noise", "embedded", "variants", "report")
WEIGHT_NOISE = 0.075  # Chung et al. 2014: weight noise of this standard deviation (model.weight_noise)
CELLS = ("rnn", "gru", "lstm")
PRESETS = {("chung", c): f"jsb_chung_{c}" for c in CELLS} | {("bai", c): f"jsb_{c}" for c in CELLS}
PUBLISHED = {("chung", "rnn"): 9.10, ("chung", "gru"): 8.54, ("chung", "lstm"): 8.67,
             ("bai", "rnn"): 8.91, ("bai", "gru"): 8.43, ("bai", "lstm"): 8.45}  # fmt: skip
SETTING_NAMES = {"chung": "Chung et al. 2014 (~20K parameters)", "bai": "Bai, Kolter & Koltun 2018 (~300K parameters)"}
# What each search draws: optimizer, log10 of the learning rate's range, number of candidates, the generator seed.
SEARCHED = {("chung", c): ("rmsprop", (-3.5, -1.5)) for c in CELLS} | {("bai", "rnn"): ("adam", (-4.0, -2.5))}
SEARCH_SEED, SEARCH_CANDIDATES = 2014, {"chung": 8, "bai": 5}
# The stage ``ordering``: the Bai GRU and LSTM presets keep the music issue's lr 3e-3 in the tables; here each gets
# its own rate, searched like the RNN's over a range that brackets 3e-3 (the preset's own run is a candidate), to
# test whether the GRU/LSTM order of the tables survives when neither cell is held at the other's rate.
RETUNED = {("bai", c): ("adam", (-3.5, -2.0)) for c in ("gru", "lstm")}
RETUNE_SEED = 2018
# Greff et al. 2017: the vanilla LSTM (with peepholes) first, then NP and the seven other changes.
VARIANTS = ("peephole", "standard", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "fgr")
PAPER_NAMES = {"peephole": "V", "standard": "NP", "nig": "NIG", "nfg": "NFG", "nog": "NOG", "niaf": "NIAF",
               "noaf": "NOAF", "cifg": "CIFG", "fgr": "FGR"}  # fmt: skip
VARIANT_SEED, VARIANT_LR, VARIANT_HIDDEN = 2017, (-3.5, -1.5), (20, 200)
VARIANT_EPOCHS = 30
QUICK = {"epochs": 3, "batches": 5, "seeds": (1, 2), "trials": 2, "candidates": 2, "max_chorales": 40}


@dataclass
class Job:
    """One rnnlab-train run: its directory below the work directory, its overrides and what it stands for."""

    name: str
    overrides: list[str]
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- the draws
def log_uniform(rng: Any, low: float, high: float) -> float:
    """10 ** U(low, high), rounded to 3 significant digits (what the run's config records)."""
    return float(f"{10 ** rng.uniform(low, high):.3g}")


def lr_candidates(setting: str, cell: str, n: int, space: dict | None = None, seed: int = SEARCH_SEED) -> list[float]:
    """The search's learning rates for one preset: n log-uniform draws from one seeded generator per preset
    (``space``: SEARCHED, or RETUNED with RETUNE_SEED for the stage ``ordering``)."""
    import numpy as np

    _, (low, high) = (space or SEARCHED)[(setting, cell)]
    rng = np.random.default_rng([seed, ("chung", "bai").index(setting), CELLS.index(cell)])
    return sorted(log_uniform(rng, low, high) for _ in range(n))


def variant_trials(n: int) -> list[tuple[float, int]]:
    """The variant study's trials, (learning rate, hidden size), the same for every variant (a paired design):
    log-uniform learning rate in 10^[-3.5, -1.5], log-uniform hidden size in [20, 200]."""
    import numpy as np

    rng = np.random.default_rng(VARIANT_SEED)
    trials = []
    for _ in range(n):
        lr = log_uniform(rng, *VARIANT_LR)
        hidden = round(math.exp(rng.uniform(math.log(VARIANT_HIDDEN[0]), math.log(VARIANT_HIDDEN[1]))))
        trials.append((lr, hidden))
    return trials


# ---------------------------------------------------------------------------------------------- the jobs
@dataclass
class Plan:
    work: Path
    data_path: Path | None
    seeds: tuple[int, ...] = (1, 2, 3)
    epochs: int | None = None  # None: each preset's own
    batches: int | None = None  # --quick: this many training batches per epoch
    trials: int = 10
    candidates: dict[str, int] = field(default_factory=lambda: dict(SEARCH_CANDIDATES))
    max_chorales: int | None = None  # the embedded split: parse only this many chorales (--quick)
    extra: list[str] = field(default_factory=list)
    cells: tuple[str, ...] = CELLS  # --cells: the tables of these cells only
    side_seeds: int | None = None  # --quick: the noise and embedded stages with this many seeds only
    variants: tuple[str, ...] = VARIANTS  # --variants: the variant study of these only

    def common(self, split: str) -> list[str]:
        out = ["threads=1", "trainer.enable_progress_bar=false", "print_sample=false"]
        if split == "standard":
            if self.data_path is None:
                raise SystemExit("published.py: the standard split needs --data-path (jsb-chorales-quarter.json)")
            out.append(f"data.path={self.data_path}")
        elif self.max_chorales:
            out.append(f"data.max_chorales={self.max_chorales}")
        if self.epochs:
            out.append(f"trainer.max_epochs={self.epochs}")
        if self.batches:
            out.append(f"trainer.limit_train_batches={self.batches}")
        return out + self.extra


def search_jobs(plan: Plan) -> list[Job]:
    jobs = []
    for (setting, cell), (optimizer, _) in SEARCHED.items():
        if cell not in plan.cells:
            continue
        for lr in lr_candidates(setting, cell, plan.candidates[setting]):
            info = {"stage": "search", "setting": setting, "cell": cell, "lr": lr, "backend": "numpy",
                    "seed": plan.seeds[0], "split": "standard"}  # fmt: skip
            jobs.append(Job(f"search/{setting}_{cell}/lr{lr:g}", [
                f"experiment={PRESETS[(setting, cell)]}", "model.backend=numpy", f"seed={plan.seeds[0]}",
                f"optimizer={optimizer}", f"optimizer.lr={lr}", *plan.common("standard")], info))  # fmt: skip
    return jobs


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json when it ended (completed, or failed: a diverged trial stays failed); None otherwise."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") in ("completed", "failed") else None


def selected(plan: Plan, jobs: list[Job] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Each searched preset's chosen candidate: the lowest best val/nll among its finished search runs (``jobs``:
    those of the stage ``ordering`` instead; none without the standard split)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    if plan.data_path is None:
        return best
    for job in search_jobs(plan) if jobs is None else jobs:
        summary = finished(plan.work / job.name)
        if summary is None or summary.get("status") != "completed":
            continue
        val = summary.get("optimized_value")
        if val is None or not math.isfinite(val):
            continue
        key = (job.info["setting"], job.info["cell"])
        if key not in best or val < best[key]["val"]:
            best[key] = {"val": val, "lr": job.info["lr"], "job": job}
    return best


def noise_jobs(plan: Plan) -> list[Job]:
    """The Chung presets again with their weight noise (``model.weight_noise``), the rest of their protocol
    unchanged: the effect of the one part the tables leave out."""
    jobs = []
    for job in table_jobs(plan, "standard"):
        if job.info["setting"] != "chung" or job.info["seed"] not in plan.seeds[: plan.side_seeds]:
            continue
        info = {**job.info, "stage": "noise", "weight_noise": WEIGHT_NOISE}
        name = f"noise/chung_{info['cell']}/{info['backend']}/seed{info['seed']}"
        jobs.append(Job(name, [*job.overrides, f"model.weight_noise={WEIGHT_NOISE}"], info))
    return jobs


def table_jobs(plan: Plan, split: str) -> list[Job]:
    """Every preset x backend x seed on ``split``; the searched presets with their chosen learning rate. The
    search's own run at the chosen rate (NumPy, the first seed, standard split) is that configuration's run.
    On the embedded split without a finished search (no standard split at hand) the presets keep their own
    learning rates, the choices of the committed study."""
    chosen = selected(plan)
    missing = [PRESETS[k] for k in SEARCHED if k not in chosen and k[1] in plan.cells]
    if missing and split == "standard":
        raise SystemExit(f"published.py: stage search has not finished for {', '.join(missing)}: run --stages search")
    jobs = []
    for setting in ("chung", "bai"):
        for cell in plan.cells:
            over = [f"experiment={PRESETS[(setting, cell)]}"]
            if (setting, cell) in chosen:
                optimizer = SEARCHED[(setting, cell)][0]
                over += [f"optimizer={optimizer}", f"optimizer.lr={chosen[(setting, cell)]['lr']}"]
            for backend in ("torch", "numpy"):
                for seed in plan.seeds[: plan.side_seeds] if split == "embedded" else plan.seeds:
                    info = {"stage": split, "setting": setting, "cell": cell, "backend": backend, "seed": seed,
                            "split": split}  # fmt: skip
                    search = chosen.get((setting, cell))
                    if search and split == "standard" and backend == "numpy" and seed == plan.seeds[0]:
                        jobs.append(Job(search["job"].name, search["job"].overrides, info))
                        continue
                    name = f"{split}/{setting}_{cell}/{backend}/seed{seed}"
                    jobs.append(Job(name, [*over, f"model.backend={backend}", f"seed={seed}", *plan.common(split)],
                                    info))  # fmt: skip
    return jobs


def preset_lr(preset: str) -> float:
    """The learning rate a preset holds (conf/experiment/<preset>.yaml)."""
    import yaml

    return float(yaml.safe_load((ROOT / "conf" / "experiment" / f"{preset}.yaml").read_text())["optimizer"]["lr"])


def ordering_jobs(plan: Plan, seeds: bool = False) -> list[Job]:
    """The stage ``ordering``: the Bai GRU and LSTM each with its own learning rate. First (``seeds`` False) the
    candidates on the first seed, NumPy backend: the RETUNED draws, and the preset's own rate, whose run is the
    tables' NumPy run of that seed; then (``seeds`` True) every seed of each cell's chosen rate, the tables' own
    runs when the choice is the preset's rate."""
    tables = {(j.info["setting"], j.info["cell"], j.info["seed"]): j for j in table_jobs(plan, "standard")
              if j.info["backend"] == "numpy"}  # fmt: skip
    candidates = []
    for (setting, cell), (optimizer, _) in RETUNED.items():
        if cell not in plan.cells:
            continue
        own = preset_lr(PRESETS[(setting, cell)])
        for lr in sorted({own, *lr_candidates(setting, cell, plan.candidates[setting], RETUNED, RETUNE_SEED)}):
            info = {"stage": "ordering", "setting": setting, "cell": cell, "lr": lr, "backend": "numpy",
                    "seed": plan.seeds[0], "split": "standard", "preset_lr": lr == own}  # fmt: skip
            if lr == own:
                candidates.append(Job(tables[(setting, cell, plan.seeds[0])].name,
                                      tables[(setting, cell, plan.seeds[0])].overrides, info))  # fmt: skip
                continue
            candidates.append(Job(f"ordering/{setting}_{cell}/lr{lr:g}/seed{plan.seeds[0]}", [
                f"experiment={PRESETS[(setting, cell)]}", "model.backend=numpy", f"seed={plan.seeds[0]}",
                f"optimizer={optimizer}", f"optimizer.lr={lr}", *plan.common("standard")], info))  # fmt: skip
    if not seeds:
        return candidates
    jobs = []
    for (setting, cell), pick in selected(plan, candidates).items():
        job = pick["job"]
        for seed in plan.seeds:
            info = {**job.info, "seed": seed}
            if seed == plan.seeds[0]:
                jobs.append(job)
            elif job.info["preset_lr"]:
                jobs.append(Job(tables[(setting, cell, seed)].name, tables[(setting, cell, seed)].overrides, info))
            else:
                over = [o for o in job.overrides if not o.startswith("seed=")]
                jobs.append(Job(job.name.rsplit("/", 1)[0] + f"/seed{seed}", [*over, f"seed={seed}"], info))
    return jobs


def variant_jobs(plan: Plan) -> list[Job]:
    jobs = []
    epochs = [] if plan.epochs else [f"trainer.max_epochs={VARIANT_EPOCHS}"]
    for variant in plan.variants:
        for k, (lr, hidden) in enumerate(variant_trials(plan.trials), 1):
            info = {"stage": "variants", "variant": variant, "trial": k, "lr": lr, "hidden": hidden,
                    "backend": "numpy", "seed": plan.seeds[0], "split": "standard"}  # fmt: skip
            jobs.append(Job(f"variants/{variant}/trial{k:02d}", [
                "experiment=jsb_lstm", f"model.variant={variant}", f"model.hidden_size={hidden}",
                f"optimizer.lr={lr}", "model.backend=numpy", f"seed={plan.seeds[0]}", *epochs,
                *plan.common("standard")], info))  # fmt: skip
    return jobs


# ---------------------------------------------------------------------------------------------- running
class Runner:
    """Runs jobs ``parallel`` at a time, each one rnnlab-train process; skips finished runs; an interrupted or
    killed run's directory is kept (renamed ``<name>.partial-N``) and the run resumes from its last checkpoint."""

    def __init__(self, work: Path, parallel: int):
        self.work, self.parallel = work, parallel
        self.lock = threading.Lock()
        self.done = 0
        self.children: set[subprocess.Popen] = set()  # the runs going now: told to stop when the script is
        self.stopping = False

    def command(self, job: Job) -> tuple[list[str], Path | None]:
        run_dir = self.work / job.name
        resume = None
        if run_dir.exists():  # an earlier attempt that did not end: keep it, resume from its last checkpoint
            from rnnlab.runtime.rundir import set_aside

            aside = set_aside(run_dir)
            last = aside / "checkpoints" / "last.ckpt"
            resume = last if last.is_file() else None
        cmd = [sys.executable, "-m", "rnnlab", *job.overrides, f"hydra.run.dir={run_dir}"]
        if resume is not None:
            cmd.append(f"ckpt_path={resume}")
        return cmd, resume

    def run_one(self, job: Job, total: int) -> None:
        if self.stopping:
            return
        run_dir = self.work / job.name
        cmd, resume = self.command(job)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        log = run_dir.with_name(run_dir.name + ".log")
        t0 = time.perf_counter()
        with log.open("a") as fh:
            fh.write(f"$ {shlex.join(cmd[1:])}\n")
            fh.flush()
            with self.lock:
                if self.stopping:
                    return
                child = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
                self.children.add(child)
            code = child.wait()
            with self.lock:
                self.children.discard(child)
        summary = finished(run_dir) or {}
        val = summary.get("optimized_value")
        with self.lock:
            self.done += 1
            how = f"resumed from {resume}, " if resume else ""
            result = f"best val/nll {val:.3f}" if isinstance(val, float) else f"exit {code}, no finished summary"
            print(f"[{self.done}/{total}] {job.name}: {how}{(time.perf_counter() - t0) / 60:.1f} min, {result}",
                  flush=True)  # fmt: skip

    def stop(self) -> None:
        """SIGINT to every run going now: rnnlab-train saves last.ckpt, writes an "interrupted" summary.json and
        exits; the next call of the script resumes them."""
        import signal

        with self.lock:
            self.stopping = True
            children = list(self.children)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)

    @staticmethod
    def running_elsewhere(run_dir: Path) -> str | None:
        """How the run in ``run_dir`` is still going (another published.py, a run by hand), or None: a directory
        whose owner process is alive on this host, or that another host owns, is left alone."""
        from rnnlab.runtime.rundir import describe_owner, read_owner, still_running

        owner = read_owner(run_dir) if run_dir.is_dir() else {}
        return describe_owner(owner) if still_running(owner) else None  # killed or crashed: resume it

    def run(self, jobs: list[Job], stage: str) -> None:
        todo, seen = [], set()
        for job in jobs:
            if job.name in seen or finished(self.work / job.name) is not None:
                continue
            busy = self.running_elsewhere(self.work / job.name)
            if busy:
                print(f"{job.name}: left alone, it belongs to {busy}", flush=True)
                seen.add(job.name)
                continue
            seen.add(job.name)
            todo.append(job)
        print(f"stage {stage}: {len(jobs)} runs, {len(jobs) - len(todo)} finished before, {len(todo)} to run "
              f"({self.parallel} at a time)", flush=True)  # fmt: skip
        if not todo:
            return
        self.done = 0
        t0, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        pool = ThreadPoolExecutor(self.parallel)
        futures = [pool.submit(self.run_one, job, len(todo)) for job in todo]
        try:
            for future in futures:
                future.result()
        except BaseException:  # Ctrl-C or SIGTERM: start nothing new, stop the runs going (each checkpoints)
            self.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        minutes = (time.perf_counter() - t0) / 60
        print(f"stage {stage}: {minutes:.1f} min", flush=True)
        record = {"stage": stage, "started": started, "minutes": round(minutes, 2), "runs": len(todo),
                  "skipped": len(jobs) - len(todo), "jobs": self.parallel}  # fmt: skip
        with (self.work / "stages.jsonl").open("a") as fh:  # the report's wall times per stage
            fh.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------- results
def load_run(run_dir: Path) -> dict[str, Any] | None:
    from jsb_chorales import epochs_of_best  # the epoch of the best val/nll (scripts/jsb_chorales.py)

    summary = finished(run_dir)
    if summary is None:
        return None
    tests = summary.get("test_metrics") or {}
    return {
        "status": summary["status"], "val": summary.get("optimized_value"), "test": tests.get("test/nll"),
        "frame_acc": tests.get("test/frame_acc"), "wall_min": (summary.get("wall_s") or math.nan) / 60,
        "step_ms": summary.get("step_ms_median"), "params": summary.get("num_params"),
        "epochs": summary.get("epochs"), "best_epoch": epochs_of_best(run_dir), "dir": run_dir,
        "error": summary.get("error"),
    }  # fmt: skip


def collect(plan: Plan, jobs: list[Job]) -> list[dict[str, Any]]:
    rows = []
    for job in jobs:
        row = load_run(plan.work / job.name)
        if row is not None:
            rows.append({**job.info, **row, "name": job.name})
    return rows


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    p.add_argument("--data-path", type=Path, default=STANDARD, help="the standard split (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--trials", type=int, default=10, help="trials per LSTM variant (default 10)")
    p.add_argument("--work", type=Path, default=None, help="where runs go (default outputs/published)")
    p.add_argument("--out", type=Path, default=None, help="where the report goes (default experiments/published)")
    p.add_argument("--quick", action="store_true", help="every stage in miniature (outputs/published_quick)")
    p.add_argument("--cells", default=",".join(CELLS), help="the tables of these cells only (default: all)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="the variant study of these only (default: all)")
    p.add_argument("--max-chorales", type=int, default=None, help="the embedded split: parse this many chorales")
    p.add_argument("--extra", action="append", default=[], help="one more override for every run (repeatable)")
    p.add_argument("--conditions", default="", help="a sentence on the machine's state, for the report")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage {unknown[0]!r}: choose from {', '.join(STAGES)}")
    default_work = "outputs/published_quick" if args.quick else "outputs/published"
    work = (args.work or ROOT / default_work).resolve()
    out = (args.out or (work / "report" if args.quick else ROOT / "experiments" / "published")).resolve()
    data_path = args.data_path.resolve() if args.data_path and args.data_path.is_file() else None
    needs_standard = [s for s in stages if s in ("search", "tables", "ordering", "noise", "variants")]
    if needs_standard and data_path is None:
        print(f"published.py: stage {needs_standard[0]} needs the standard split, and {args.data_path} is not a file "
              "(--data-path)", file=sys.stderr)  # fmt: skip
        return 2
    cells, variants = tuple(args.cells.split(",")), tuple(args.variants.split(","))
    for name, given, known in (("--cells", cells, CELLS), ("--variants", variants, VARIANTS)):
        if not set(given) <= set(known):
            p.error(f"{name}: unknown {sorted(set(given) - set(known))[0]!r}; choose from {', '.join(known)}")
    plan = Plan(work=work, data_path=data_path, seeds=tuple(int(s) for s in args.seeds.split(",")),
                trials=args.trials, extra=list(args.extra), cells=cells, variants=variants)  # fmt: skip
    if args.quick:
        plan.seeds, plan.epochs, plan.trials = QUICK["seeds"], QUICK["epochs"], QUICK["trials"]
        plan.batches, plan.side_seeds = QUICK["batches"], 1
        plan.candidates = {k: QUICK["candidates"] for k in plan.candidates}
        plan.max_chorales = QUICK["max_chorales"]
    plan.max_chorales = args.max_chorales or plan.max_chorales
    runner = Runner(work, args.jobs)
    t0 = time.perf_counter()
    import signal

    def terminate(signum: int, frame: Any) -> None:  # SIGTERM (kill, a scheduler) as Ctrl-C: stop and keep
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    # Ctrl-C stops the study even when this process inherited SIGINT ignored (started in the background by a
    # non-interactive shell, `cmd &`, or by a process that ignores it): Python then installs no handler of its own
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for stage in stages:
            if stage == "search":
                runner.run(search_jobs(plan), stage)
            elif stage == "tables":
                runner.run(table_jobs(plan, "standard"), stage)
            elif stage == "ordering":
                runner.run(ordering_jobs(plan), "ordering (candidates)")
                runner.run(ordering_jobs(plan, seeds=True), "ordering (seeds)")
            elif stage == "noise":
                runner.run(noise_jobs(plan), stage)
            elif stage == "embedded":
                runner.run(table_jobs(plan, "embedded"), stage)
            elif stage == "variants":
                runner.run(variant_jobs(plan), stage)
            elif stage == "report":
                from published_report import write_report

                write_report(plan, out, args, time.perf_counter() - t0)
    except KeyboardInterrupt:
        print("published.py: interrupted; run the same command again to go on where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
