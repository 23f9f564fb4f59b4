"""Pruning of unpromising trials in an Optuna search (``hydra/sweeper=optuna_pruning``, rnnlab.runtime.pruning).

Real ``rnnlab-train -m hparams_search=classify_optuna`` searches of a tiny classifier that validates every 2 steps.
What each job reported and where it stopped (its summary.json) is checked against the pruners' rules computed here
from those reports (the median rule, the threshold rule), against the sweeper's record (optuna_trials.json), the
study in its storage and optimization_results.yaml: a trial is pruned exactly where the rule says, stops there,
still tests its best checkpoint, and is told PRUNED, so the best trial is a completed one. Jobs in the sweeper's
process reach a study in memory; jobs in other processes (joblib) an SQLite study. A search that cannot prune ends
in one line naming the key."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import check_pruning_search, job_dirs, sweep_dir, trial_jobs, trial_reports

from rnnlab.runtime import search

pytestmark = pytest.mark.cli

RNNLAB_TRAIN = Path(sys.executable).parent / "rnnlab-train"
# a tiny classifier validated at steps 2, 4 and 6 (one validation batch of 16 samples)
TINY = ["data.num_samples=200", "model.hidden_size=4", "model.embed_dim=4", "trainer.max_steps=6",
        "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "threads=1"]  # fmt: skip
SEARCH = ["-m", "hparams_search=classify_optuna", *TINY]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", *search.WORKER_VARIABLES)}
    env.update(RNNLAB_OUTPUT_DIR=str(cwd / "out"), OMP_NUM_THREADS="1")
    return subprocess.run([str(RNNLAB_TRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip().startswith("rnnlab: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_the_median_pruner_stops_a_trial_where_the_median_rule_says(tmp_path, backend):
    result = run_cli(*SEARCH, f"model.backend={backend}", "hydra.sweeper.n_trials=5",
                     "hydra.sweeper.pruner.n_startup_trials=1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    jobs = trial_jobs(sweep)
    check_pruning_search(sweep, jobs, max_steps=6)
    # the median rule (maximize): from the first completed trial on, a trial is pruned at the first validation where
    # its best value so far is below the median of the completed trials' values at that step (trials run one by one)
    pruned = later_complete = 0
    for index, job in enumerate(jobs):
        done = [trial_reports(other) for other in jobs[:index] if other["entry"]["state"] == "COMPLETE"]
        expected = None
        mine = trial_reports(job)
        for step in sorted(mine):
            best_so_far = max(value for s, value in mine.items() if s <= step)
            at_step = [r[step] for r in done if step in r]
            if done and at_step and best_so_far < statistics.median(at_step):
                expected = step
                break
        got = job["summary"]["optuna_trial"]["pruned"]
        assert (got["step"] if got else None) == expected, (index, mine, done)
        pruned += got is not None
        later_complete += got is None and bool(done)
    assert pruned >= 1, "the search should prune a trial"
    assert later_complete >= 1, "the search should keep a trial judged against a completed one"


def test_jobs_in_other_processes_report_to_a_study_in_a_storage(tmp_path):
    lower = 0.55
    result = run_cli(*SEARCH, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
                     "hydra.sweeper.n_trials=6", "hydra.sweeper.storage=sqlite:///search.db",
                     "hydra/sweeper/pruner=threshold", f"hydra.sweeper.pruner.lower={lower}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    jobs = trial_jobs(sweep)
    check_pruning_search(sweep, jobs, max_steps=6)
    # the threshold rule: pruned at the first validation whose value is below `lower`
    for job in jobs:
        mine = trial_reports(job)
        expected = next((step for step in sorted(mine) if mine[step] < lower), None)
        got = job["summary"]["optuna_trial"]["pruned"]
        assert (got["step"] if got else None) == expected, mine
    states = [job["entry"]["state"] for job in jobs]
    assert "PRUNED" in states, states
    assert "COMPLETE" in states, states
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="classify_optuna", storage=f"sqlite:///{tmp_path / 'search.db'}")
    by_number = {trial.number: trial for trial in study.trials}
    assert len(by_number) == len(jobs)
    for job in jobs:
        trial = by_number[job["entry"]["trial"]]
        assert trial.state.name == job["entry"]["state"]
        assert trial.intermediate_values == pytest.approx(trial_reports(job))  # written by the job, in its own process
        if trial.state.name == "COMPLETE":
            assert trial.value == pytest.approx(job["entry"]["value"])


def test_a_search_without_a_pruner_runs_every_trial_to_the_end(tmp_path):
    result = run_cli(*SEARCH, "~hydra/sweeper/pruner", "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    trials = json.loads((sweep / "optuna_trials.json").read_text())
    assert trials["pruner"] is None
    for job in job_dirs(sweep):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["optuna_trial"] is None
        assert summary["global_step"] == 6
        assert trials["jobs"][job.name.split("_", 1)[0]]["state"] == "COMPLETE"


def test_a_search_whose_every_trial_is_pruned_ends_in_one_line(tmp_path):
    result = run_cli(*SEARCH, "hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=threshold",
                     "hydra.sweeper.pruner.lower=1.01", cwd=tmp_path)  # fmt: skip
    line = one_error_line(result)
    sweep = sweep_dir(tmp_path)
    assert line == (
        "rnnlab: error: hydra.sweeper.pruner=ThresholdPruner: no trial of this search completed (2 pruned), so it "
        f"has no best trial; each trial's state is in {sweep / 'optuna_trials.json'}"
    )
    assert [job["summary"]["optuna_trial"]["pruned"]["step"] for job in trial_jobs(sweep)] == [2, 2]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["hydra/launcher=joblib"], "rnnlab: error: hydra.sweeper.storage: the jobs of JoblibLauncher run in other "
         "processes, which reach their trials (for the pruner, MedianPruner) only through a storage: set "
         "hydra.sweeper.storage=sqlite:///search.db (one machine) or a PostgreSQL URL"),
        (["optimized_metric=test/acc"], "rnnlab: error: optimized_metric=test/acc: a pruner (MedianPruner) judges a "
         "trial by its value at each validation, so the optimized metric must be a validation metric (val/...); or "
         "hydra/sweeper/pruner=none"),
        (["hydra.sweeper.direction=[maximize,minimize]"], "rnnlab: error: hydra.sweeper.pruner=MedianPruner: Optuna "
         "prunes single-objective studies only; this one has 2 directions (hydra.sweeper.direction): "
         "hydra/sweeper/pruner=none"),
        (["trainer.devices=2"], "rnnlab: error: trainer.devices=2: a trial of a pruning search runs in one process "
         "(its pruner stops the fit on one rank); hydra/sweeper/pruner=none for a search of multi-process trials"),
        (["+hydra.sweeper.pruner.patience=3"], "rnnlab: error: hydra.sweeper.pruner=MedianPruner: "),
    ],
    ids=["in-memory-study-in-other-processes", "test-metric", "multi-objective", "ddp", "bad-pruner-key"],
)  # fmt: skip
def test_a_search_that_cannot_prune_ends_in_one_line_before_any_trial(tmp_path, overrides, expected):
    line = one_error_line(run_cli(*SEARCH, *overrides, cwd=tmp_path))
    assert line.startswith(expected), line
    if overrides[0].startswith("+hydra.sweeper.pruner"):
        assert "patience" in line
    multiruns = tmp_path / "out" / "multiruns"
    assert not multiruns.exists() or not any(multiruns.iterdir()), "the sweep directory is given back"
