"""The three cell experiments (conf/experiment/{irnn_adding,forget_bias,grad_clipping}.yaml and
scripts/cell_experiments.py): each preset's sweep compares what it says on both backends, with nothing else
differing between the backends; the report turns a multirun into a README with its tables and figures;
rnnlab.callbacks.GradientNorm logs the same gradient norm before clipping on both backends."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import OmegaConf

from rnnlab.cli import config_dir
from rnnlab.config import validate

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "cell_experiments.py"


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("cell_experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("cell_experiments", module)  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


@functools.cache
def sweep_jobs(name: str) -> list[tuple[list[str], Any]]:
    """Every job of a preset's sweep: (its overrides, its config composed as rnnlab-train composes it, hydra node
    included), as the basic sweeper expands them. Cached: the tests only read the configs."""
    from hydra import compose, initialize_config_dir
    from hydra.types import RunMode

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        base = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
        assert base.hydra.mode == RunMode.MULTIRUN
        params = base.hydra.sweeper.params
        keys = list(params)
        values = [str(params[k]).split(",") for k in keys]
        jobs = []
        for combo in itertools.product(*values):
            overrides = [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
            cfg = compose("train", overrides=[f"experiment={name}", *overrides], return_hydra_config=True)
            jobs.append((overrides, cfg))
    return jobs


def without_backend(cfg: Any) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra")
    plain["model"].pop("backend")
    return plain


EXPECTED = {
    # the compared settings of each study: what tells its arms apart, for every job
    "irnn_adding": (
        lambda c: (c.model.cell, str(c.model.nonlinearity), c.model.init),
        {("rnn", "relu", "identity"), ("rnn", "tanh", "default"), ("lstm", "tanh", "default")},
    ),
    "forget_bias": (
        lambda c: (c.data.name, c.task.name, float(c.model.forget_bias)),
        {("adding", "regress", 0.0), ("adding", "regress", 1.0), ("copy", "tag", 0.0), ("copy", "tag", 1.0)},
    ),
    "grad_clipping": (
        lambda c: (c.model.cell, str(c.model.nonlinearity), c.model.init, c.trainer.gradient_clip_val),
        {("rnn", "relu", "identity", 1.0), ("rnn", "relu", "identity", None)},
    ),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_preset_sweeps_its_settings_on_both_backends(name):
    arm_of, arms = EXPECTED[name]
    jobs = sweep_jobs(name)
    assert len(jobs) == 2 * len(arms)
    seen = {(arm_of(cfg), str(cfg.model.backend)) for _, cfg in jobs}
    assert seen == {(arm, backend) for arm in arms for backend in ("numpy", "torch")}
    for overrides, cfg in jobs:
        validate(cfg)  # every job is a valid run (e.g. no forget bias on a cell without a forget gate)
        assert (cfg.threads, cfg.seed) == (1, 42), overrides
        assert cfg.callbacks.grad_norm._target_ == "rnnlab.callbacks.GradientNorm"
        assert cfg.trainer.max_steps > 0
        assert isinstance(cfg.trainer.val_check_interval, int)
        if cfg.task.name == "tag":
            assert cfg.model.bidirectional is False  # recall from the past only
    # the two backends of an arm differ in model.backend alone
    by_arm: dict[Any, list[dict[str, Any]]] = {}
    for _, cfg in jobs:
        by_arm.setdefault(arm_of(cfg), []).append(without_backend(cfg))
    for arm, configs in by_arm.items():
        assert len(configs) == 2, arm
        assert configs[0] == configs[1], arm


def test_the_irnn_study_gives_every_network_the_same_budget():
    jobs = [cfg for _, cfg in sweep_jobs("irnn_adding")]
    shared = {(c.data.length, c.trainer.max_steps, c.optimizer.name, c.optimizer.lr, c.model.hidden_size,
               c.trainer.gradient_clip_val) for c in jobs}  # fmt: skip
    assert len(shared) == 1


# ------------------------------------------------------------------------------------------------- report
def fake_job(sweep: Path, num: int, cfg: Any, curves: dict[str, dict[int, float]], summary: dict[str, Any]) -> None:
    """A job directory as a real run leaves it: the resolved config, csv/metrics.csv, summary.json."""
    job = sweep / f"{num}_job"
    (job / "csv").mkdir(parents=True)
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra")
    (job / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
    rows = [{"step": step, "epoch": 0, tag: value} for tag, points in curves.items() for step, value in points.items()]
    pd.DataFrame(rows).to_csv(job / "csv" / "metrics.csv", index=False)
    (job / "summary.json").write_text(json.dumps(summary))


def fake_clipping_sweep(sweep: Path) -> None:
    """grad_clipping's 4 jobs with made-up curves: clipped runs solve the task after 400 steps (the torch run's
    losses drift 1 % from numpy's after step 100); the unclipped numpy run diverged at step 3."""
    jobs = sweep_jobs("grad_clipping")
    steps = range(9, 600, 10)
    for num, (_, cfg) in enumerate(jobs):
        clipped = cfg.trainer.gradient_clip_val is not None
        drift = 1.01 if cfg.model.backend == "torch" else 1.0
        loss = {s: 0.2 / (1 + s / 50) * (drift if s > 100 else 1.0) for s in steps}
        val = {199: 0.1, 399: 0.005, 599: 0.004} if clipped else {199: 0.17, 399: 0.169, 599: 0.169}
        grads = {s: (5.0 if clipped else 0.1) for s in steps}
        curves = {"train/loss": loss, "val/mse": val, "train/grad_norm": grads,
                  "train/grad_norm_max": {s: 3 * g for s, g in grads.items()}}  # fmt: skip
        test = {"test/mse": 0.0045 if clipped else 0.168, "test/loss": 0.0045 if clipped else 0.168}
        summary = {"status": "completed", "test_metrics": test, "wall_s": 120.0, "step_ms_median": 10.0,
                   "global_step": 600, "backend": str(cfg.model.backend), "cell": "rnn", "task": "regress",
                   "data": "adding", "finished_at": "2026-12-06T12:00:00+00:00"}  # fmt: skip
        if not clipped and cfg.model.backend == "numpy":
            curves = {"train/loss": {0: 0.9}}
            summary = {"status": "failed", "backend": "numpy", "global_step": 3,
                       "error": "divergence: train/loss is 4.2e+07, more than callbacks.divergence.max_loss_factor="
                                "1e+06 times the run's first loss 1.14 at step 3 (epoch 0, batch 3); last good "
                                "checkpoint: none"}  # fmt: skip
        fake_job(sweep, num, cfg, curves, summary)


def test_report_of_a_multirun_has_the_tables_and_figures(tmp_path):
    cells = load_script()
    sweep, out = tmp_path / "sweep", tmp_path / "report"
    fake_clipping_sweep(sweep)
    assert cells.main(["grad_clipping", "--from-sweep", str(sweep), "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Gradient clipping on and off for a ReLU RNN")
    assert "A smoke run" not in readme
    assert "`python scripts/cell_experiments.py grad_clipping`" in readme
    results = readme.split("## Results")[1].split("## NumPy against torch")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in results.splitlines() if line.startswith("| ")]
    table = {(r[1], r[2]): r for r in rows[1:]}
    assert set(table) == {(a, b) for a in ("clip norm 1", "no clipping") for b in ("numpy", "torch")}
    assert [r[0] for r in rows[1:]] == ["adding, T = 50"] * 4
    assert table["clip norm 1", "numpy"][3:6] == ["mse 0.0045", "0.0040", "400"]  # test, best val, steps to solve
    assert table["clip norm 1", "torch"][5] == "400"
    assert table["no clipping", "torch"][5] == "not in 600"
    assert table["no clipping", "numpy"][9] == "diverged at step 3"
    assert table["clip norm 1", "numpy"][7:9] == ["15", "5"]  # largest gradient norm, median over the 2nd half
    pairs = readme.split("## NumPy against torch")[1].split("## Figures")[0]
    clip_row = next(line for line in pairs.splitlines() if line.startswith("| adding, T = 50 | clip norm 1 |"))
    assert "100 (apart from step 110)" in clip_row  # the torch loss drifts by 1 % after step 100
    assert "no clipping" not in pairs  # the diverged numpy run has no curve to pair with
    assert "- clip norm 1: solved after 400 steps (numpy); solved after 400 steps (torch)" in readme
    assert "- no clipping: diverged at step 3 (numpy); not solved in 600 steps" in readme
    assert "## Runs that did not complete" in readme
    for name in ("curves_adding_t_50.png", "grad_norm_adding_t_50.png"):
        assert f"]({name})" in readme
        assert (out / name).read_bytes().startswith(b"\x89PNG")


def test_a_missing_sweep_is_one_line_and_writes_nothing(tmp_path, capsys):
    cells = load_script()
    assert cells.main(["grad_clipping", "--from-sweep", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 1
    assert "no sweep directory" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_smoke_report_never_goes_under_experiments(tmp_path):
    cells = load_script()
    with pytest.raises(SystemExit, match="smoke report does not go under experiments"):
        cells.main(["irnn_adding", "--smoke", "--work", str(tmp_path), "--out", str(ROOT / "experiments" / "x")])
    assert not (ROOT / "experiments" / "x").exists()


def test_smoke_overrides_reach_the_jobs_but_not_the_base_config():
    """data.* keys become one-value sweeps: forget_bias's base config has data=shakespeare (no data.length)."""
    cells = load_script()
    assert cells.job_overrides(["data.length=5", "task.monitor=val/loss", "trainer.max_steps=12"]) == [
        "data.length=choice(5)",
        "task.monitor=choice(val/loss)",
        "trainer.max_steps=12",
    ]
    for study in cells.STUDIES.values():
        keys = {o.partition("=")[0] for o in study.smoke}
        assert {"trainer.max_steps", "data.length", "model.hidden_size", "data.num_train"} <= keys


@pytest.mark.cli
def test_the_command_regenerates_a_report_from_a_sweep(tmp_path):
    sweep, out = tmp_path / "sweep", tmp_path / "report"
    fake_clipping_sweep(sweep)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(SCRIPT), "grad_clipping", "--from-sweep", str(sweep), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| adding, T = 50 | clip norm 1 | numpy | mse 0.0045 |" in (out / "README.md").read_text()
    assert "README.md (4 runs)" in done.stdout


# ----------------------------------------------------------------------------------- the gradient norm
@pytest.mark.compose
def test_gradient_norm_before_clipping_is_the_same_on_both_backends(compose, tmp_path):
    """With clipping at 0.01 (always active), both backends log the norm before clipping, and equal ones."""
    from rnnlab.train import train

    logged = {}
    for backend in ("numpy", "torch"):
        cfg = compose("experiment=grad_clipping", f"model.backend={backend}", "trainer.gradient_clip_val=0.01",
                      "model.hidden_size=8", "data.length=6", "data.num_train=256", "data.num_val=64",
                      "data.num_test=64", "trainer.max_steps=6", "trainer.val_check_interval=3",
                      "trainer.log_every_n_steps=1", "logger=csv", run_dir=tmp_path / backend)  # fmt: skip
        train(cfg)
        metrics = pd.read_csv(tmp_path / backend / "csv" / "metrics.csv")
        logged[backend] = metrics.dropna(subset=["train/grad_norm"]).set_index("step")
    numpy, torch = logged["numpy"], logged["torch"]
    assert list(numpy.index) == list(torch.index) == list(range(6))  # every step (log_every_n_steps=1)
    assert (numpy["train/grad_norm"] > 0.01).all()  # before clipping: above the clipping threshold
    pd.testing.assert_series_equal(numpy["train/grad_norm"], torch["train/grad_norm"], rtol=1e-4)
    max_is_norm = numpy["train/grad_norm_max"].to_numpy() == numpy["train/grad_norm"].to_numpy()
    assert max_is_norm.all()  # one step per write: the largest norm since the last write is that step's
    pd.testing.assert_series_equal(numpy["train/loss"], torch["train/loss"], rtol=1e-4)  # clipped alike
