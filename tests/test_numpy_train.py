"""The NumPy backend inside the Lightning loop: training parity with torch, resume, checkpoints, generation."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from rnnlab.backends.torch import OPTIMIZERS as TORCH_OPTIMIZERS
from rnnlab.tasks.language_model import LanguageModelTask
from rnnlab.train import train

pytestmark = pytest.mark.compose

CLASSIFY = ("task=classify", "data=synthetic_text", "data.num_samples=600", "data.batch_size=16",
            "data.min_len=4", "data.max_len=12")  # fmt: skip
LANGUAGE_MODEL = ("task=language_model", "data=shakespeare", "data.seq_len=12", "data.batch_size=8",
                  "task.sample_length=16")  # fmt: skip
SMALL = ("model.hidden_size=7", "model.embed_dim=5", "logger=csv", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2")  # fmt: skip
OPTIMIZERS = {
    "sgd": ("optimizer=sgd", "optimizer.lr=0.3", "optimizer.momentum=0.9", "optimizer.nesterov=true",
            "optimizer.weight_decay=0.01"),
    "adam": ("optimizer=adam", "optimizer.lr=0.01", "optimizer.weight_decay=0.01"),
    "adagrad": ("optimizer=adagrad", "optimizer.lr=0.1", "optimizer.lr_decay=0.01",
                "optimizer.initial_accumulator_value=0.1"),
    "rmsprop": ("optimizer=rmsprop", "optimizer.lr=0.01", "optimizer.alpha=0.9", "optimizer.momentum=0.5",
                "optimizer.centered=true", "optimizer.weight_decay=0.01"),
}  # fmt: skip


class StepLosses(L.Callback):
    """Every training step's loss, kept in memory as a Python float (float64 for a float64 run)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach().double()))


def run_recording(compose, overrides, run_dir: Path, monkeypatch) -> tuple[list[float], object]:
    """train(cfg) with a StepLosses callback added; returns the per-step losses and the trained task module."""
    recorder = StepLosses()
    result = train(compose(*overrides, run_dir=run_dir), callbacks=[recorder])
    return recorder.losses, result.objects["model"]


# ------------------------------------------------------------------------------------- training parity
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize(
    ("task", "model"),
    [("classify", ("model=gru", "model.num_layers=2", "model.bidirectional=true")),
     ("classify", ("model=rnn",)),
     ("language_model", ("model=lstm", "model.num_layers=2"))],
)  # fmt: skip
def test_training_parity_with_torch(compose, tmp_path, monkeypatch, optimizer, task, model):
    """Same config on both backends, float64, dropout 0, clipping on, >= 20 steps: per-step losses equal to
    1e-8 relative (compared in memory, not through 32-bit logs), and so are the final weights."""
    data = CLASSIFY if task == "classify" else LANGUAGE_MODEL
    common = (*data, *SMALL, *model, *OPTIMIZERS[optimizer], "trainer.precision=64", "trainer.max_steps=22",
              "trainer.max_epochs=null", "trainer.gradient_clip_val=0.5", "trainer.val_check_interval=11",
              "trainer.check_val_every_n_epoch=null", "seed=11")  # fmt: skip
    losses = {}
    tasks = {}
    for backend in ("torch", "numpy"):
        losses[backend], tasks[backend] = run_recording(
            compose, (*common, f"model.backend={backend}"), tmp_path / backend, monkeypatch
        )
    assert len(losses["torch"]) == len(losses["numpy"]) == 22
    for backend in ("torch", "numpy"):  # LearningRateMonitor's tag names torch's class on both backends
        with open(tmp_path / backend / "csv" / "metrics.csv", newline="") as f:
            columns = next(csv.reader(f))
        assert [c for c in columns if c.startswith("lr-")] == [f"lr-{TORCH_OPTIMIZERS[optimizer]}"], backend
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-8, atol=0)
    assert losses["torch"][-1] < losses["torch"][0]  # it trained
    # the clip was active at least once (otherwise the test would not cover it)
    torch_net = tasks["torch"].net
    for name, p in torch_net.named_parameters():
        np.testing.assert_allclose(tasks["numpy"].net.params[name], p.detach().double().numpy(), rtol=1e-7, atol=1e-9)


def test_clipping_is_active_in_the_parity_setting(compose, tmp_path, monkeypatch):
    """The parity test's clip threshold (0.5) is below the gradient norm, so clipping changes the result."""
    common = (*CLASSIFY, *SMALL, "model=gru", *OPTIMIZERS["sgd"], "trainer.precision=64", "trainer.max_steps=6",
              "trainer.max_epochs=null", "model.backend=numpy", "seed=11")  # fmt: skip
    clipped, _ = run_recording(compose, (*common, "trainer.gradient_clip_val=0.5"), tmp_path / "a", monkeypatch)
    free, _ = run_recording(compose, (*common, "trainer.gradient_clip_val=null"), tmp_path / "b", monkeypatch)
    assert clipped[0] == free[0]
    assert abs(clipped[-1] - free[-1]) > 1e-6


def test_accumulated_gradients_match_torch(compose, tmp_path, monkeypatch):
    common = (*CLASSIFY, *SMALL, "model=lstm", *OPTIMIZERS["adam"], "trainer.precision=64", "trainer.max_epochs=1",
              "trainer.limit_train_batches=8", "trainer.accumulate_grad_batches=3", "seed=2")  # fmt: skip
    result = {}
    for backend in ("torch", "numpy"):
        losses, task = run_recording(compose, (*common, f"model.backend={backend}"), tmp_path / backend, monkeypatch)
        result[backend] = (losses, task)
    # Lightning reports the torch loss already divided by accumulate_grad_batches (its closure scales it)
    np.testing.assert_allclose(np.array(result["numpy"][0]) / 3, result["torch"][0], rtol=1e-8)
    assert result["numpy"][1].trainer.global_step == result["torch"][1].trainer.global_step == 3  # 3 + 3 + 2
    for name, p in result["torch"][1].net.named_parameters():
        np.testing.assert_allclose(result["numpy"][1].net.params[name], p.detach().numpy(), rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------------------- fast_dev_run
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(
    ("data", "variant"),
    [(CLASSIFY, ("model.num_layers=2", "model.dropout=0.3", "model.bidirectional=true")),
     (LANGUAGE_MODEL, ("model.num_layers=2", "model.dropout=0.3")),
     (LANGUAGE_MODEL, ("model.embed_dim=0",))],
)  # fmt: skip
def test_numpy_fast_dev_run(compose, cell, data, variant):
    value = train(compose(*data, "model.backend=numpy", f"model={cell}", "model.hidden_size=8", *variant,
                          "trainer.fast_dev_run=true")).value  # fmt: skip
    assert value is not None
    assert np.isfinite(value)


def test_float32_is_the_default_dtype(compose, tmp_path, monkeypatch):
    _, task = run_recording(compose, (*CLASSIFY, *SMALL, "model.backend=numpy", "trainer.max_steps=2"),
                            tmp_path, monkeypatch)  # fmt: skip
    assert all(a.dtype == np.float32 for a in task.net.params.values())


# ----------------------------------------------------------------------------------- resume and generate
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_numpy_resume_equals_uninterrupted(compose, tmp_path, dropout):
    """2 epochs in one go == 1 epoch + resume: parameters, optimizer state and the dropout RNG all come back."""
    settings = (*CLASSIFY, *SMALL, "model=lstm", "model.num_layers=2", f"model.dropout={dropout}",
                "model.backend=numpy", "optimizer=adam", "trainer.limit_train_batches=4", "trainer.max_steps=-1",
                "trainer.precision=64", "seed=4")  # fmt: skip
    train(compose(*settings, "trainer.max_epochs=2", run_dir=tmp_path / "whole"))
    train(compose(*settings, "trainer.max_epochs=1", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose(*settings, "trainer.max_epochs=2", f"ckpt_path={last}", run_dir=tmp_path / "resumed"))

    def state(run: str) -> dict:
        return torch.load(tmp_path / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)

    whole, resumed, first = state("whole"), state("resumed"), state("first")
    assert whole["global_step"] == resumed["global_step"] == 8
    for name, value in whole["numpy_backend"]["params"].items():
        assert value.dtype == torch.float64
        torch.testing.assert_close(resumed["numpy_backend"]["params"][name], value, rtol=0, atol=0)
    assert whole["numpy_backend"]["rng"] == resumed["numpy_backend"]["rng"]
    torch.testing.assert_close(
        resumed["optimizer_states"][0]["numpy"]["state"], whole["optimizer_states"][0]["numpy"]["state"], rtol=0, atol=0
    )
    # the check has teeth: one epoch less is a different model
    assert any(
        not torch.equal(first["numpy_backend"]["params"][k], v) for k, v in whole["numpy_backend"]["params"].items()
    )


def test_generation_from_numpy_checkpoint_and_across_backends(compose, tmp_path):
    """A NumPy checkpoint reloads and generates the same text; torch with the same float64 weights samples the
    same characters (shared sampler)."""
    settings = (*LANGUAGE_MODEL, *SMALL, "model=gru", "trainer.max_steps=6", "trainer.max_epochs=null",
                "trainer.precision=64", "seed=8")  # fmt: skip
    train(compose(*settings, "model.backend=numpy", run_dir=tmp_path / "np"))
    ckpt = tmp_path / "np" / "checkpoints" / "last.ckpt"
    numpy_task = LanguageModelTask.load_from_checkpoint(ckpt, map_location="cpu")
    assert numpy_task.hparams.backend == "numpy"
    assert numpy_task.backend.name == "numpy"
    text = numpy_task.generate("ROMEO:", 80, temperature=0.9, top_k=None, seed=3)
    assert text.startswith("ROMEO:")
    assert len(text) == len("ROMEO:") + 80
    assert numpy_task.generate("ROMEO:", 80, temperature=0.9, top_k=None, seed=3) == text

    hp = dict(numpy_task.hparams)
    hp.update(backend="torch")
    for key in ("dtype", "clip", "accumulate_grad_batches"):
        hp.pop(key, None)
    torch_task = LanguageModelTask(**hp).double()
    torch_task.net.load_arrays(numpy_task.net.params)
    assert torch_task.generate("ROMEO:", 80, temperature=0.9, top_k=None, seed=3) == text
    assert torch_task.generate("ROMEO:", 80, temperature=0.9, top_k=5, seed=3) == numpy_task.generate(
        "ROMEO:", 80, temperature=0.9, top_k=5, seed=3
    )
