"""Learning-rate schedules (``scheduler=step|cosine|plateau``): the NumPy backend's from-scratch schedules
(rnnlab/models/numpy/schedules.py) against torch.optim.lr_scheduler driven on a dummy torch optimizer, rate by rate;
training runs on both backends that log the same ``lr-Adam`` at every step, torch's values, and agree in their
weights; a resumed run that ends with the same rate and weights as an uninterrupted one; bad values in one line."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

from rnnlab.backends.torch import build_lr_scheduler
from rnnlab.config import validate
from rnnlab.errorlines import one_line_error
from rnnlab.errors import ConfigError
from rnnlab.models.numpy.schedules import build_schedule
from rnnlab.train import train

pytestmark = pytest.mark.unit

BASE_LR = 0.01


def dummy_optimizer(lr: float = BASE_LR) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=lr)


def torch_rates(scheduler: dict, steps: int, horizon: int | None = None) -> list[float]:
    """The rate of each of ``steps`` optimizer steps under torch's scheduler (optimizer.step, then scheduler.step)."""
    optimizer = dummy_optimizer()
    sched = build_lr_scheduler(optimizer, scheduler, horizon)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    return rates


def numpy_rates(scheduler: dict, steps: int, horizon: int | None = None) -> list[float]:
    schedule = build_schedule(scheduler, BASE_LR, horizon)
    lr, rates = schedule.start(BASE_LR), []
    for _ in range(steps):
        rates.append(lr)
        lr = schedule.step(lr)
    return rates


def step(step_size: int, gamma: float) -> dict:
    return {"name": "step", "step_size": step_size, "gamma": gamma}


def cosine(total: int | None, warmup: int = 0, start: float = 1e-3, eta_min: float = 0.0) -> dict:
    return {"name": "cosine", "total_steps": total, "eta_min": eta_min, "warmup_steps": warmup,
            "warmup_start_factor": start}  # fmt: skip


def plateau(**kw) -> dict:
    keys = {"factor": 0.5, "patience": 2, "threshold": 1e-4, "threshold_mode": "rel", "cooldown": 0, "min_lr": 0.0,
            "eps": 1e-8}  # fmt: skip
    return {"name": "plateau", **keys, **kw}


# ------------------------------------------------------------------------------------------ unit: the formulas
PER_STEP = [
    step(1, 0.5), step(3, 0.1), step(7, 0.9), step(4, 1.5),
    cosine(1), cosine(5), cosine(37), cosine(37, eta_min=1e-4), cosine(12, eta_min=0.02),  # eta_min above the lr
    cosine(20, warmup=5), cosine(10, warmup=1, start=0.5, eta_min=1e-5), cosine(50, warmup=49, start=0.01),
    cosine(101, warmup=13, start=1.0, eta_min=3e-4),
]  # fmt: skip


@pytest.mark.parametrize("scheduler", PER_STEP, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_per_step_schedules_equal_torch_at_every_step(scheduler):
    """Every rate, up to 2.5 horizons (the cosine rises again past its horizon, as torch's does), bit for bit."""
    horizon = scheduler.get("total_steps") or 10
    steps = int(2.5 * horizon) + 3
    expected, got = torch_rates(scheduler, steps), numpy_rates(scheduler, steps)
    assert got == expected
    assert len(set(expected)) > 1  # the rate moved


def test_cosine_horizon_defaults_to_the_given_run_length():
    """total_steps=null takes the horizon the backend passes (the run's steps); the rate reaches eta_min there."""
    rates = numpy_rates(cosine(None, warmup=4, eta_min=1e-5), 31, horizon=30)
    assert rates == torch_rates(cosine(None, warmup=4, eta_min=1e-5), 31, horizon=30)
    assert rates[0] == BASE_LR * 1e-3
    assert rates[4] == pytest.approx(BASE_LR, rel=1e-15)
    assert rates[30] == pytest.approx(1e-5, rel=1e-12)
    assert min(rates) == rates[30]


METRICS = {  # validation values: improving, flat, noisy, a long plateau
    "noisy": [1.0, 0.9, 0.95, 0.91, 0.9, 0.9, 0.89999, 0.5, 0.6, 0.7, 0.8, 0.49, 0.49, 0.49, 0.49, 0.49, 0.2],
    "rising": [0.1 * i for i in range(1, 18)],
}


@pytest.mark.parametrize("series", sorted(METRICS))
@pytest.mark.parametrize(
    ("mode", "options"),
    [("min", {}), ("max", {}), ("min", {"patience": 0, "factor": 0.1}), ("min", {"threshold_mode": "abs",
     "threshold": 0.05}), ("max", {"threshold_mode": "abs", "threshold": 0.01, "cooldown": 2}),
     ("min", {"patience": 0, "min_lr": 2e-3}), ("min", {"patience": 0, "factor": 0.9, "eps": 5e-4})],
)  # fmt: skip
def test_plateau_equals_torch_on_the_same_values(series, mode, options):
    config = plateau(**options)
    optimizer = dummy_optimizer()
    reference = build_lr_scheduler(optimizer, config, None, mode)
    assert isinstance(reference, lr_scheduler.ReduceLROnPlateau)
    schedule = build_schedule(config, BASE_LR, None, mode)
    lr = schedule.start(BASE_LR)
    for value in METRICS[series]:
        reference.step(value)
        lr = schedule.observe(lr, value)
        assert lr == optimizer.param_groups[0]["lr"]
        assert (schedule.best, schedule.num_bad_epochs, schedule.cooldown_counter) == (
            reference.best, reference.num_bad_epochs, reference.cooldown_counter)  # fmt: skip


def test_plateau_reduces_in_the_tested_series():
    """Teeth of the test above: the series make both schedules reduce the rate, in both modes."""
    for mode, series in (("min", "noisy"), ("max", "noisy"), ("min", "rising")):
        schedule = build_schedule(plateau(patience=0), BASE_LR, None, mode)
        lr = BASE_LR
        for value in METRICS[series]:
            lr = schedule.observe(lr, value)
        assert lr < BASE_LR, mode


@pytest.mark.parametrize("scheduler", [step(3, 0.5), cosine(20, warmup=5), cosine(9)], ids=["step", "warm", "cos"])
def test_schedule_state_resumes_exactly(scheduler):
    """A schedule rebuilt from its state_dict mid-way continues with the same rates (what a checkpoint does)."""
    whole = numpy_rates(scheduler, 25)
    first = build_schedule(scheduler, BASE_LR, None)
    lr = first.start(BASE_LR)
    for _ in range(8):
        lr = first.step(lr)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # through a checkpoint file, loaded as Lightning loads the best one
    buffer.seek(0)
    second = build_schedule(scheduler, BASE_LR, None)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    rates = []
    for _ in range(25 - 8):
        rates.append(lr)
        lr = second.step(lr)
    assert rates == whole[8:]


# ------------------------------------------------------------------------------------- bad values: one line
BAD = [
    (["scheduler=step", "scheduler.step_size=-1"], ["scheduler.step_size", "-1"]),
    (["scheduler=step", "scheduler.step_size=0"], ["scheduler.step_size", "> 0"]),
    (["scheduler=step", "scheduler.gamma=nan"], ["scheduler.gamma", "nan"]),
    (["scheduler=cosine", "scheduler.warmup_steps=-3"], ["scheduler.warmup_steps", ">= 0"]),
    (["scheduler=cosine", "scheduler.warmup_steps=100", "scheduler.total_steps=100"],
     ["scheduler.warmup_steps=100", "scheduler.total_steps=100"]),
    (["scheduler=cosine", "scheduler.warmup_steps=50", "trainer.max_steps=40"],
     ["scheduler.warmup_steps=50", "trainer.max_steps"]),
    (["scheduler=cosine", "scheduler.warmup_start_factor=0"], ["scheduler.warmup_start_factor", "(0, 1]"]),
    (["scheduler=cosine", "scheduler.eta_min=-1e-3"], ["scheduler.eta_min", ">= 0"]),
    (["scheduler=cosine", "scheduler.total_steps=0"], ["scheduler.total_steps", "> 0"]),
    (["scheduler=plateau", "scheduler.factor=1.0"], ["scheduler.factor", "(0, 1)"]),
    (["scheduler=plateau", "scheduler.patience=-1"], ["scheduler.patience", ">= 0"]),
    (["scheduler.name=cosine"], ["scheduler.name=cosine", "scheduler=cosine"]),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "fragments"), BAD, ids=[" ".join(c[0]) for c in BAD])
def test_bad_values_are_one_line(raw_compose, overrides, fragments):
    with pytest.raises(ConfigError) as info:
        validate(raw_compose(*overrides))
    line = one_line_error(info.value)
    assert line == str(info.value)
    assert "\n" not in line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [(["scheduler=exponential"], ["scheduler/exponential", "cosine, none, plateau, step"]),
     (["scheduler=plateau", "scheduler.mode=max"], ["scheduler.mode"]),
     (["scheduler=plateau", "scheduler.threshold_mode=relative"], ["scheduler.threshold_mode", "relative"]),
     (["scheduler=step", "scheduler.warmup_steps=3"], ["scheduler.warmup_steps"])],
)  # fmt: skip
def test_unknown_scheduler_or_key_is_one_line(raw_compose, overrides, fragments):
    with pytest.raises(Exception) as info:  # noqa: PT011 (Hydra's and OmegaConf's errors, and ConfigError)
        validate(raw_compose(*overrides))
    line = one_line_error(info.value)
    assert line is not None
    assert "\n" not in line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_defaults_are_no_schedule(raw_compose):
    cfg = raw_compose()
    assert dict(cfg.scheduler) == {"name": "none"}
    for name in ("step", "cosine", "plateau"):
        validate(raw_compose(f"scheduler={name}"))


# ------------------------------------------------------------------------- compose: training on both backends
CLASSIFY = ("task=classify", "data=synthetic_text", "data.num_samples=600", "data.batch_size=16", "data.min_len=4",
            "data.max_len=12")  # fmt: skip
RUN = (*CLASSIFY, "model=gru", "model.hidden_size=7", "model.embed_dim=5", "logger=csv", "optimizer=adam",
       "optimizer.lr=0.01", "trainer.precision=64", "trainer.gradient_clip_val=0.5", "trainer.log_every_n_steps=1",
       "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "seed=11")  # fmt: skip
STEPS = ("trainer.max_steps=12", "trainer.max_epochs=null", "trainer.val_check_interval=3",
         "trainer.check_val_every_n_epoch=null")  # fmt: skip
SCHEDULES = {
    "step": ("scheduler=step", "scheduler.step_size=4", "scheduler.gamma=0.5"),
    "cosine": ("scheduler=cosine", "scheduler.warmup_steps=3", "scheduler.eta_min=1e-4"),
    # val/acc (classify's monitor, mode max) never improves by 1 after the first validation: every later one halves
    "plateau": (
        "scheduler=plateau",
        "scheduler.patience=0",
        "scheduler.threshold_mode=abs",
        "scheduler.threshold=1",
        "scheduler.factor=0.5",
    ),
}


def logged(run_dir: Path, column: str) -> dict[int, float]:
    """{step: value} of one column of the run's metrics.csv (Python floats written with repr: exact)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {int(r["step"]): float(r[column]) for r in rows if r.get(column) not in (None, "")}


def weights(task) -> dict[str, np.ndarray]:
    return task.backend.weights(task.net)


def expected_rates(name: str, run_dir: Path, steps: int) -> list[float]:
    """torch's scheduler on a dummy optimizer with the run's settings: per step, or fed the run's validations."""
    if name == "step":
        return torch_rates(step(4, 0.5), steps)
    if name == "cosine":
        return torch_rates(cosine(None, warmup=3, eta_min=1e-4), steps, horizon=steps)
    optimizer = dummy_optimizer()
    reference = lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0, threshold=1.0,
                                               threshold_mode="abs")  # fmt: skip
    validations = logged(run_dir, "val/acc")  # classify monitors val/acc (max), logged at the step before
    rates = []
    for i in range(steps):
        for at in sorted(validations):
            if at == i - 1:
                reference.step(validations[at])
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


@pytest.mark.compose
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_training_logs_torch_rates_on_both_backends(compose, tmp_path, name):
    """float64, 12 steps, validation every 3: ``lr-Adam`` at every step equal on both backends and equal to torch's
    scheduler on a dummy optimizer; the weights agree as in the parity tests; the rate moved."""
    tasks, rates = {}, {}
    for backend in ("torch", "numpy"):
        result = train(compose(*RUN, *STEPS, *SCHEDULES[name], f"model.backend={backend}", run_dir=tmp_path / backend))
        tasks[backend] = result.objects["model"]
        rates[backend] = logged(tmp_path / backend, "lr-Adam")
    assert sorted(rates["torch"]) == list(range(12))
    assert rates["numpy"] == rates["torch"]
    expected = expected_rates(name, tmp_path / "torch", 12)
    assert [rates["torch"][i] for i in range(12)] == expected
    assert len(set(expected)) >= 3, expected  # the schedule changed the rate more than once
    if name == "plateau":
        assert logged(tmp_path / "numpy", "val/acc") == pytest.approx(logged(tmp_path / "torch", "val/acc"), abs=0)
    a, b = weights(tasks["numpy"]), weights(tasks["torch"])
    for key in b:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-7, atol=1e-9)


class StepRates(L.Callback):
    """The rate each optimizer step uses (read before the step, on both backends)."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rates.append(optimizer.param_groups[0]["lr"])


@pytest.mark.compose
def test_cosine_horizon_counts_epochs_and_accumulation_on_both_backends(compose, tmp_path):
    """total_steps=null with max_epochs: 2 epochs of 5 batches, 2 batches a step (the last of an epoch alone): 6
    optimizer steps, on torch (Lightning accumulates) and on NumPy (the backend does), down to eta_min. (The logs
    count batches on NumPy under accumulation, so the rates are read at each optimizer step.)"""
    settings = (*RUN, "scheduler=cosine", "scheduler.eta_min=1e-4", "trainer.max_epochs=2", "trainer.max_steps=-1",
                "trainer.limit_train_batches=5", "trainer.accumulate_grad_batches=2")  # fmt: skip
    finals, rates = {}, {}
    for backend in ("torch", "numpy"):
        recorder = StepRates()
        result = train(compose(*settings, f"model.backend={backend}", run_dir=tmp_path / backend),
                       callbacks=[recorder])  # fmt: skip
        finals[backend] = result.objects["trainer"].optimizers[0].param_groups[0]["lr"]
        rates[backend] = recorder.rates
        assert result.objects["trainer"].global_step == 6
    assert rates["numpy"] == rates["torch"] == torch_rates(cosine(6, eta_min=1e-4), 6)
    assert finals["numpy"] == finals["torch"] == pytest.approx(1e-4, rel=1e-12)  # the horizon is the run's end


@pytest.mark.compose
@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_resume_equals_uninterrupted(compose, tmp_path, backend, name):
    """Stopped after 7 steps (after the validations at steps 3 and 6) and resumed from last.ckpt: the same rate at
    every later step, the same final rate and schedule state, bit-identical weights."""
    explicit = ("scheduler.total_steps=12",) if name == "cosine" else ()  # the first run's horizon is not 7
    settings = (*RUN, *STEPS, *SCHEDULES[name], *explicit, f"model.backend={backend}")
    whole = train(compose(*settings, run_dir=tmp_path / "whole"))
    train(compose(*settings, "trainer.max_steps=7", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = train(compose(*settings, f"ckpt_path={last}", run_dir=tmp_path / "resumed"))
    a, b = logged(tmp_path / "resumed", "lr-Adam"), logged(tmp_path / "whole", "lr-Adam")
    assert sorted(a) == list(range(7, 12))
    assert a == {step: b[step] for step in a}
    assert len({b[s] for s in range(7, 12)} | {b[0]}) >= 2  # the rate changes within the compared steps or before
    lr = [r.objects["trainer"].optimizers[0].param_groups[0]["lr"] for r in (whole, resumed)]
    assert lr[0] == lr[1]
    wa, wb = (weights(r.objects["model"]) for r in (whole, resumed))
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key])
    if name == "plateau":
        ckpts = [torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
                 for d in (tmp_path / "whole", tmp_path / "resumed")]  # fmt: skip
        states = [c["lr_plateau"] if backend == "torch" else c["optimizer_states"][0]["schedule"] for c in ckpts]
        assert states[0]["num_bad_epochs"] == states[1]["num_bad_epochs"]
        assert float(states[0]["best"]) == float(states[1]["best"])
        assert float(states[0]["last_epoch"]) == float(states[1]["last_epoch"]) == 4


@pytest.mark.compose
def test_resume_refuses_another_schedule_or_rate(compose, tmp_path):
    settings = (*RUN, *STEPS, *SCHEDULES["step"])
    train(compose(*settings, "trainer.max_steps=4", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    step = SCHEDULES["step"]
    cases = [
        (("scheduler=cosine",), "scheduler.name (step -> cosine)"),
        (("scheduler=none",), "scheduler.name (step -> none)"),
        ((*step, "scheduler.gamma=0.1"), "scheduler.gamma (0.5 -> 0.1)"),
        ((*step, "optimizer.lr=0.5"), "optimizer.lr (0.01 -> 0.5; the scheduler=step"),
    ]
    for overrides, fragment in cases:
        cfg = compose(*RUN, *STEPS, *overrides, f"ckpt_path={last}", run_dir=tmp_path / "again")
        with pytest.raises(ConfigError) as info:
            train(cfg)
        assert fragment in str(info.value), str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.compose
def test_scheduler_none_changes_nothing(compose, tmp_path):
    """scheduler=none: the rate is optimizer.lr at every step and the checkpoint carries no schedule (the same run
    as before the scheduler group)."""
    result = train(compose(*RUN, *STEPS, "model.backend=numpy", run_dir=tmp_path / "run"))
    assert set(logged(tmp_path / "run", "lr-Adam").values()) == {0.01}
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert "schedule" not in ckpt["optimizer_states"][0]
    assert not ckpt["lr_schedulers"]
    assert result.objects["model"].configure_callbacks() == []
    assert math.isfinite(result.value)
