"""Real sweeps on the command line: a grid run in parallel by the joblib launcher, and a seeded Optuna search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import job_dirs, sweep_dir

pytestmark = pytest.mark.cli

RNNLAB_TRAIN = Path(sys.executable).parent / "rnnlab-train"
# a tiny classifier: 200 samples (3 training batches an epoch), 2 steps, one validation and one test batch
TINY = ["data.num_samples=200", "model.hidden_size=4", "model.embed_dim=4", "trainer.max_steps=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]  # fmt: skip


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(RNNLAB_OUTPUT_DIR=str(cwd / "out"), OMP_NUM_THREADS="1")
    return subprocess.run([str(RNNLAB_TRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_joblib_grid_runs_jobs_in_parallel(tmp_path):
    grid = ["model=rnn,gru", "task=classify", "data=synthetic_text"]
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *grid, *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout
    jobs = job_dirs(sweep_dir(tmp_path))
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1"]
    for job, cell in zip(jobs, ["rnn", "gru"], strict=True):
        assert f"model={cell}" in job.name  # readable: the job's own overrides
        assert "launcher" not in job.name  # hydra/launcher=joblib is no override of the job
        summary = json.loads((job / "summary.json").read_text())
        assert (summary["status"], summary["cell"], summary["task"]) == ("completed", cell, "classify")
        assert summary["global_step"] == 2
        resolved = yaml.safe_load((job / "config_resolved.yaml").read_text())
        assert resolved["paths"]["run_dir"] == str(job)
    assert not (tmp_path / "out" / "runs").exists()


def _search(cwd: Path) -> tuple[dict, list[tuple[list[str], dict]]]:
    """One 3-trial classify_optuna search: (optimization_results.yaml, [(trial overrides, summary.json)])."""
    cwd.mkdir()
    result = run_cli("-m", "hparams_search=classify_optuna", "hydra.sweeper.n_trials=3", *TINY, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(cwd)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = []
    for job in job_dirs(sweep):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        summary = json.loads((job / "summary.json").read_text())
        trials.append(([o for o in overrides if not o.startswith("hparams_search=")], summary))
    return results, trials


def test_optuna_search_is_seeded_and_reports_the_best_trial(tmp_path):
    results, trials = _search(tmp_path / "first")
    assert len(trials) == 3
    for overrides, summary in trials:
        assert summary["status"] == "completed"
        assert summary["optimized_metric"] == "val/acc"
        assert summary["task"] == "classify"
        assert any(o.startswith("optimizer.lr=") for o in overrides)
    values = [summary["optimized_value"] for _, summary in trials]
    assert results["best_value"] == pytest.approx(max(values))  # direction: maximize
    best_overrides, best_summary = trials[values.index(max(values))]
    hparams = best_summary["hparams"]
    for key, value in results["best_params"].items():
        flat = key.replace(".", "/", 1)  # model.cell -> model/cell, as flat_hparams names it
        if isinstance(value, float):
            assert hparams[flat] == pytest.approx(value)
        else:
            assert str(hparams[flat]) == str(value)  # True and true, 64 and 64
        assert any(o.startswith(f"{key}=") for o in best_overrides)

    again, trials_again = _search(tmp_path / "second")  # the same seed proposes the same trials
    assert [o for o, _ in trials_again] == [o for o, _ in trials]
    assert again["best_params"] == results["best_params"]
