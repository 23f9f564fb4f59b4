"""What pruning saves in an Optuna search: the same search with a pruner and without, side by side.

    .venv/bin/python scripts/bench_pruning.py                                    # char_lm_optuna, 12 trials
    .venv/bin/python scripts/bench_pruning.py --trials 20 --pruners median,none --json outputs/pruning.json
    .venv/bin/python scripts/bench_pruning.py -- trainer.max_steps=400 trainer.val_check_interval=100

Each pruner's search is one ``rnnlab-train -m hparams_search=<preset> hydra/sweeper/pruner=<pruner>`` process, all
started at once, each on one thread (``threads=1``), so that on a machine with a core per search they share the
machine's state and drift alike; the sampler has the preset's seed, so their first ``n_startup_trials`` (10) trials
are the same settings. ``none`` is Optuna's NopPruner: the trials report but are never pruned. Per search it
prints the wall time, the training steps of all trials (summary.json ``global_step``), how many trials were pruned
and the best value (optimization_results.yaml). Extra arguments after ``--`` go to every search.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from rnnlab.atomic import write_json

ROOT = Path(__file__).resolve().parent.parent
RNNLAB_TRAIN = Path(sys.executable).parent / "rnnlab-train"
# the char_lm_optuna preset on a budget: 200 steps a trial, a validation every 50 steps on 20 batches
DEFAULT = ["trainer.max_steps=200", "trainer.val_check_interval=50", "trainer.limit_val_batches=20",
           "trainer.limit_test_batches=20", "trainer.enable_progress_bar=false", "task.sample_length=0",
           "logger=csv"]  # fmt: skip


def start(preset: str, pruner: str, trials: int, extra: list[str], out: Path) -> subprocess.Popen:
    args = [str(RNNLAB_TRAIN), "-m", f"hparams_search={preset}", f"hydra/sweeper/pruner={pruner}",
            f"hydra.sweeper.n_trials={trials}", "threads=1", *extra]  # fmt: skip
    env = {**os.environ, "RNNLAB_OUTPUT_DIR": str(out / pruner), "OMP_NUM_THREADS": "1"}
    log = (out / f"{pruner}.log").open("w")
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def outcome(out: Path) -> dict[str, Any]:
    (sweep,) = (out / "multiruns").iterdir()
    trials = json.loads((sweep / "optuna_trials.json").read_text())["jobs"]
    jobs = []
    for num, entry in sorted(trials.items(), key=lambda item: int(item[0])):
        (job,) = sweep.glob(f"{num}_*")
        summary = json.loads((job / "summary.json").read_text())
        jobs.append({"overrides": entry["overrides"], "state": entry["state"], "value": entry["value"],
                     "steps": summary["global_step"], "wall_s": summary["wall_s"]})  # fmt: skip
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    return {"jobs": jobs, "best_value": results["best_value"], "best_params": results["best_params"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="char_lm_optuna")
    parser.add_argument("--pruners", default="median,none", help="comma-separated hydra/sweeper/pruner options")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("extra", nargs="*", help="overrides for every search (after --); default: %(default)s")
    opts = parser.parse_args()
    extra = opts.extra or DEFAULT
    pruners = opts.pruners.split(",")
    with tempfile.TemporaryDirectory(prefix="rnnlab-pruning-") as work:
        out = Path(work)
        started = time.perf_counter()
        procs = {p: start(opts.preset, p, opts.trials, extra, out) for p in pruners}
        walls = {}
        for pruner, proc in procs.items():
            if proc.wait() != 0:
                sys.exit(f"the {pruner} search failed:\n{(out / f'{pruner}.log').read_text()[-3000:]}")
            walls[pruner] = time.perf_counter() - started
        found = {p: outcome(out / p) for p in pruners}
    print(f"{opts.preset}, {opts.trials} trials, {' '.join(extra)}")
    print(f"{'pruner':<20}{'wall s':>9}{'steps':>8}{'pruned':>8}{'best':>10}")
    for pruner in pruners:
        jobs = found[pruner]["jobs"]
        steps = sum(j["steps"] for j in jobs)
        pruned = sum(j["state"] == "PRUNED" for j in jobs)
        print(f"{pruner:<20}{walls[pruner]:>9.1f}{steps:>8}{pruned:>8}{found[pruner]['best_value']:>10.4f}")
        found[pruner].update(wall_s=walls[pruner], steps=steps, pruned=pruned)
    if opts.json:
        write_json(opts.json, {"preset": opts.preset, "trials": opts.trials, "overrides": extra, "searches": found})


if __name__ == "__main__":
    main()
