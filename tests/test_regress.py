"""task=regress on data=adding: the generator, the data module, both backends, float64 training parity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_numpy_train import run_recording

from rnnlab.config import validate
from rnnlab.data.sequences import AddingDataModule, adding_problem
from rnnlab.errors import ConfigError
from rnnlab.train import train

pytestmark = pytest.mark.unit

ADDING = ("task=regress", "data=adding", "data.length=12", "data.num_train=256", "data.num_val=64",
          "data.num_test=64", "data.batch_size=32", "model.hidden_size=8", "logger=csv")  # fmt: skip


def test_adding_problem_sequences():
    x, y = adding_problem(500, 20, np.random.default_rng(0))
    assert x.shape == (500, 20, 2)
    assert y.shape == (500, 1)
    assert x.dtype == y.dtype == np.float32
    markers = x[..., 1]
    assert np.array_equal(markers.sum(axis=1), np.full(500, 2.0))
    positions = np.array([np.flatnonzero(row) for row in markers])
    assert (positions[:, 0] < 10).all()  # one marker in each half
    assert (positions[:, 1] >= 10).all()
    expected = (x[..., 0] * markers).sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(y[:, 0], expected, rtol=1e-6)
    assert ((x[..., 0] >= 0) & (x[..., 0] < 1)).all()


def test_constant_mean_baseline_is_one_sixth():
    _, y = adding_problem(200_000, 10, np.random.default_rng(1))
    assert np.mean((y - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.003)


def test_data_module_is_seeded_by_its_own_generator_seed():
    def splits(generator_seed: int, run_seed: int) -> AddingDataModule:
        dm = AddingDataModule(30, 64, 16, 16, generator_seed, batch_size=8, seed=run_seed)
        dm.setup("fit")
        return dm

    a, b, c = splits(5, 0), splits(5, 99), splits(6, 0)
    assert np.array_equal(a.splits["train"].x.numpy(), b.splits["train"].x.numpy())  # the run seed changes nothing
    assert not np.array_equal(a.splits["train"].x.numpy(), c.splits["train"].x.numpy())
    assert not np.array_equal(a.splits["train"].x.numpy()[:16], a.splits["val"].x.numpy())
    mean = a.splits["train"].y.double().mean().item()
    expected = ((a.splits["val"].y.double() - mean) ** 2).mean().item()
    assert a.baseline_mse["val"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.compose
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_adding_trains_on_both_backends(compose, tmp_path, cell, backend):
    value = train(compose(*ADDING, f"model={cell}", f"model.backend={backend}", "model.num_layers=2",
                          "trainer.max_steps=6", "trainer.max_epochs=null", "trainer.log_every_n_steps=1",
                          "trainer.val_check_interval=3",
                          run_dir=tmp_path)).value  # fmt: skip
    assert np.isfinite(value)
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert metrics["train/loss"].notna().sum() == 6
    val = metrics[["val/mse", "val/mse_baseline"]].dropna().iloc[-1]
    assert value == pytest.approx(val["val/mse"], rel=1e-6)  # train() returns the monitored val/mse
    assert 0.08 < val["val/mse_baseline"] < 0.3  # about 1/6 on 64 sequences


@pytest.mark.compose
def test_training_parity_on_adding(compose, tmp_path, monkeypatch):
    common = (*ADDING, "model=gru", "model.num_layers=2", "optimizer=adam", "optimizer.lr=0.01",
              "trainer.precision=64", "trainer.max_steps=24", "trainer.max_epochs=null",
              "trainer.gradient_clip_val=0.5", "seed=3")  # fmt: skip
    losses = {b: run_recording(compose, (*common, f"model.backend={b}"), tmp_path / b, monkeypatch)[0]
              for b in ("torch", "numpy")}  # fmt: skip
    assert len(losses["numpy"]) == 24
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-8, atol=0)


@pytest.mark.parametrize(
    ("override", "key"), [("data.length=1", "data.length"), ("data.num_train=0", "data.num_train")]
)
def test_bad_adding_values_name_the_key(compose, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose(*ADDING, override))


def test_vanishing_gradient_experiment_is_a_cell_by_length_sweep():
    from conftest import compose_raw

    cfg = compose_raw(["experiment=vanishing_gradient"])
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {"model": "rnn,lstm,gru", "data.length": "10,50,100"}
    assert (cfg.task.name, cfg.data.name, cfg.optimizer.name) == ("regress", "adding", "adam")
    assert cfg.callbacks.analysis._target_ == "rnnlab.analysis.AnalysisPictures"
