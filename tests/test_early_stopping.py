"""callbacks=early_stopping: the fit ends at the epoch the patience rule gives for the logged history of the monitored
metric, summary.json says so, a resumed run stops where the uninterrupted one does (with the same weights and the
same embeddings in the projector), and a run without validation fails with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.train import train

pytestmark = pytest.mark.compose

# 5 batches an epoch, float64; val/acc climbs for 4 epochs and then stays flat (or falls)
RUN = ("task=classify", "data=synthetic_text", "data.num_samples=600", "data.batch_size=32", "model=gru",
       "model.hidden_size=8", "optimizer=adam", "trainer.precision=64", "trainer.limit_train_batches=5",
       "trainer.limit_val_batches=2", "trainer.limit_test_batches=1", "trainer.max_epochs=10",
       "trainer.log_every_n_steps=1", "callbacks=early_stopping", "seed=11")  # fmt: skip
ACC = ("callbacks.early_stopping.patience=3",)  # task.monitor val/acc (max), min_delta 0
LOSS = ("task.monitor=val/loss", "task.mode=min", "callbacks.early_stopping.patience=2",
        "callbacks.early_stopping.min_delta=0.005")  # fmt: skip
BACKENDS = ("torch", "numpy")


def patience_rule(values: list[float], mode: str, patience: int, min_delta: float) -> tuple[int | None, float]:
    """(the epoch in which the fit must stop, the best value then): the first epoch whose value makes `patience`
    validations in a row that did not beat the best so far by more than min_delta (the first one always does; a
    value that beats it by less is not the new best); None if none does."""
    best, waited = None, 0
    for epoch, value in enumerate(values):
        if best is None or (value < best - min_delta if mode == "min" else value > best + min_delta):
            best, waited = value, 0
        else:
            waited += 1
            if waited >= patience:
                return epoch, best
    return None, best


def history(run_dir: Path, metric: str) -> pd.Series:
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return frame[["epoch", metric]].dropna().set_index("epoch")[metric]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def whole(tmp_path_factory, compose_factory) -> dict[str, Path]:
    out = {}
    for backend in BACKENDS:
        out[backend] = tmp_path_factory.mktemp(f"es-{backend}") / "run"
        train(compose_factory((*RUN, *ACC, f"model.backend={backend}"), out[backend]))
    return out


def check_stopped_by_the_rule(run_dir: Path, metric: str, mode: str, patience: int, min_delta: float) -> int:
    values = history(run_dir, metric)
    assert list(values.index) == list(range(len(values)))  # one validation an epoch, every epoch until the stop
    expected, best = patience_rule(values.tolist(), mode, patience, min_delta)
    assert expected is not None
    assert expected == len(values) - 1 < 9
    early = summary(run_dir)["stopped_early"]
    assert early["epoch"] == expected
    assert (early["reason"], early["monitor"], early["patience"]) == ("patience_exhausted", metric, patience)
    assert early["min_delta"] == min_delta
    assert early["best"] == pytest.approx(best, rel=1e-6)
    assert summary(run_dir)["global_step"] == 5 * (expected + 1)
    return expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_stops_where_the_patience_rule_says(whole, backend):
    assert check_stopped_by_the_rule(whole[backend], "val/acc", "max", 3, 0.0) == 6


def test_min_mode_with_min_delta(compose, recorder, capsys, tmp_path):
    """val/loss keeps falling, but by less than min_delta after a few epochs."""
    train(compose(*RUN, *LOSS, "model.backend=numpy", run_dir=tmp_path / "run"))
    stop = check_stopped_by_the_rule(tmp_path / "run", "val/loss", "min", 2, 0.005)
    assert recorder.runs[0].stopped_early == summary(tmp_path / "run")["stopped_early"]
    printed = capsys.readouterr().out
    assert f"early stopping: patience exhausted, val/loss (best 0.6866); the fit ended in epoch {stop} " in printed
    values = history(tmp_path / "run", "val/loss")
    best = summary(tmp_path / "run")["stopped_early"]["best"]
    assert values.min() < best  # a later epoch beat the best, by less than min_delta: the delta mattered


def test_a_run_without_it_says_nothing_and_trains_on(compose, tmp_path):
    train(compose(*RUN, "callbacks=default", "trainer.max_epochs=3", "logger=csv", run_dir=tmp_path / "run"))
    assert summary(tmp_path / "run")["stopped_early"] is None
    assert summary(tmp_path / "run")["global_step"] == 15


@pytest.mark.parametrize("backend", BACKENDS)
def test_resumed_run_stops_at_the_same_epoch(compose, tmp_path, whole, backend):
    """The first run ends after epoch 4 (max_epochs=5) having waited one validation; resumed with max_epochs=10 it
    must wait two more, not three (which a fresh EarlyStopping would: it would stop in epoch 8)."""
    settings = (*RUN, *ACC, f"model.backend={backend}")
    train(compose(*settings, "trainer.max_epochs=5", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    (state,) = (v for k, v in saved["callbacks"].items() if k.startswith("EarlyStopping"))
    assert (saved["epoch"], state["wait_count"]) == (4, 1)
    train(compose(*settings, f"ckpt_path={last}", run_dir=tmp_path / "resumed"))
    a, b = summary(tmp_path / "resumed"), summary(whole[backend])
    assert a["stopped_early"] == b["stopped_early"]
    assert a["stopped_early"]["epoch"] == 6
    assert a["global_step"] == b["global_step"] == 35
    assert a["test_metrics"] == b["test_metrics"]
    np.testing.assert_array_equal(history(tmp_path / "resumed", "val/acc"), history(whole[backend], "val/acc")[5:])
    ckpts = [torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
             for d in (tmp_path / "resumed", whole[backend])]  # fmt: skip
    key = "numpy_backend" if backend == "numpy" else "state_dict"
    for name, value in ckpts[1][key].items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(ckpts[0][key][name], value, rtol=0, atol=0)
    runs = (tmp_path / "resumed", whole[backend])
    projector = [sorted((d / "tensorboard").glob("*/embedding/tensors.tsv")) for d in runs]
    assert [p.parent.parent.name for p in projector[0]] == [p.parent.parent.name for p in projector[1]] == ["00035"]
    assert projector[0][0].read_bytes() == projector[1][0].read_bytes()


def test_without_validations_it_ends_in_one_line(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"^callbacks.early_stopping: .*trainer.limit_val_batches=0 runs none$"):
        train(compose(*RUN, "trainer.limit_val_batches=0", run_dir=tmp_path / "none"))
    assert not (tmp_path / "none").exists()  # refused before the fit: the run directory was given back
    # checked at the end of a training epoch that had no validation (Lightning's RuntimeError, as one line)
    with pytest.raises(ConfigError, match=r"^callbacks.early_stopping: task.monitor=val/acc had no value when it"):
        train(compose(*RUN, "callbacks.early_stopping.check_on_train_epoch_end=true",
                      "trainer.check_val_every_n_epoch=2", run_dir=tmp_path / "odd"))  # fmt: skip


@pytest.mark.unit
def test_early_stopping_combines_with_the_analysis_pictures(raw_compose):
    cfg = raw_compose("callbacks=[analysis,early_stopping]", "task=classify")
    assert {"early_stopping", "analysis", "model_checkpoint", "projector"} <= set(cfg.callbacks)
    assert (cfg.callbacks.early_stopping.monitor, cfg.callbacks.early_stopping.mode) == ("val/acc", "max")
