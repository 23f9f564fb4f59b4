"""Helpers shared by the tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

HEAVY = ("torch", "lightning", "pytorch_lightning", "torchmetrics", "tensorboard")

# Runs rnnlab-train's entry point in a fresh interpreter, then reports its exit code and which heavy packages it
# imported: {"code": ..., "heavy": [...]} after the @@PROBE@@ marker on stdout.
PROBE = f"""
import json, sys
sys.argv = ["rnnlab-train", *json.loads(sys.argv[1])]
import rnnlab.cli
code = 0
try:
    rnnlab.cli.train_main()
except SystemExit as exit:
    code = exit.code or 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("@@PROBE@@" + json.dumps({{"code": code, "heavy": heavy}}))
"""


def probe(args: list[str], cwd: Path, **kwargs: Any) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """(the finished process, its probe report) of ``rnnlab-train *args`` run through :data:`PROBE`."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=cwd, capture_output=True, text=True,
                            timeout=120, **kwargs)  # fmt: skip
    return result, json.loads(result.stdout.rpartition("@@PROBE@@")[2])


def sweep_dir(cwd: Path) -> Path:
    """The one sweep directory under ``cwd/out/multiruns``."""
    (only,) = (cwd / "out" / "multiruns").iterdir()
    return only


def job_dirs(sweep: Path) -> list[Path]:
    """The job directories of a sweep, in job-number order."""
    return sorted((p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: int(p.name.split("_", 1)[0]))  # fmt: skip


def central_difference(p: Any, idx: tuple[int, ...], loss: Any, eps: float = 1e-6) -> float:
    """(loss(p[idx] + eps) - loss(p[idx] - eps)) / 2 eps for a parameter array ``p`` changed in place and restored."""
    keep = p[idx]
    p[idx] = keep + eps
    up = loss()
    p[idx] = keep - eps
    down = loss()
    p[idx] = keep
    return (up - down) / (2 * eps)


# ------------------------------------------------------------------------------- pruning Optuna searches
def trial_jobs(sweep: Path) -> list[dict]:
    """Per job of an Optuna sweep with a pruner, in job order: its summary.json and its entry in the sweeper's
    optuna_trials.json."""
    trials = json.loads((sweep / "optuna_trials.json").read_text())["jobs"]
    jobs = []
    for job in job_dirs(sweep):
        summary = json.loads((job / "summary.json").read_text())
        jobs.append({"summary": summary, "entry": trials[job.name.split("_", 1)[0]], "dir": job})
    assert len(jobs) == len(trials)
    return jobs


def trial_reports(job: dict) -> dict[int, float]:
    return {int(step): value for step, value in job["summary"]["optuna_trial"]["reported"].items()}


def check_pruning_search(sweep: Path, jobs: list[dict], max_steps: int) -> None:
    """What every pruning search of tests/test_pruning.py's classifier (validated every 2 steps up to
    ``max_steps``) must show, whatever its pruner: each job's trial, state and value agree between its summary.json
    and the sweeper's optuna_trials.json; a pruned trial stopped at its last report and still tested; a completed
    one reported at every validation; the best value is the best completed trial's."""
    for job in jobs:
        summary, entry = job["summary"], job["entry"]
        trial = summary["optuna_trial"]
        assert summary["status"] == "completed"
        assert trial["number"] == entry["trial"]
        assert trial["monitor"] == "val/acc"
        assert summary["test_metrics"], "a pruned run still tests its best checkpoint"
        steps = sorted(trial_reports(job))
        if trial["pruned"] is not None:
            assert entry["state"] == "PRUNED"
            assert entry["value"] is None
            assert trial["pruned"]["step"] == steps[-1] == summary["global_step"] < max_steps  # stopped where judged
            assert entry["pruned_at_step"] == steps[-1]
        else:
            assert entry["state"] == "COMPLETE"
            assert steps == list(range(2, max_steps + 1, 2))
            assert summary["global_step"] == max_steps
            assert entry["value"] == pytest.approx(summary["optimized_value"])
    complete = [job["entry"]["value"] for job in jobs if job["entry"]["state"] == "COMPLETE"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    assert best == pytest.approx(max(complete))  # pruned trials are no candidates
