"""task=anomaly on data=mitdb, anomaly_injected and anomaly_csv: the metrics against scikit-learn's, the threshold
rule, the baseline, the data (the shipped record, the split's events, the injected generator, the windows), both
backends in float64, resume, scoring a raw series, and one-line errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
from test_numpy_train import run_recording

from rnnlab.config import validate
from rnnlab.data.anomaly import (
    KINDS,
    MITDB_CSV,
    build_anomaly,
    inject_anomalies,
    load_mitdb,
    load_seattle_temps,
    runs_of,
    split_events,
    training_ends,
)
from rnnlab.data.timeseries import split_bounds
from rnnlab.errors import ConfigError, DataError
from rnnlab.tasks.anomaly import (
    AnomalyTask,
    auroc,
    best_threshold,
    binary_metrics,
    rolling_zscores,
    trailing_rms,
)
from rnnlab.train import train

pytestmark = pytest.mark.unit

SMALL = ("task=anomaly", "model=gru", "model.hidden_size=6", "data.window=16", "logger=csv", "threads=1")


# ------------------------------------------------------------------------------------------------- metrics
def fixed_arrays(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Scores with ties (rounded) and labels that are partly informative."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.15).astype(int)
    scores = np.round(rng.normal(size=n) + 1.2 * labels, 1)
    return scores, labels


def test_metrics_match_scikit_learn():
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    for seed in range(4):
        scores, labels = fixed_arrays(seed)
        for threshold in (-0.5, 0.8, 1.5, 9.0):  # 9: nothing flagged
            flags = scores >= threshold
            ours = binary_metrics(flags, labels)
            assert ours["precision"] == pytest.approx(precision_score(labels, flags, zero_division=0), abs=1e-15)
            assert ours["recall"] == pytest.approx(recall_score(labels, flags, zero_division=0), abs=1e-15)
            assert ours["f1"] == pytest.approx(f1_score(labels, flags, zero_division=0), abs=1e-15)
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-14)
    assert binary_metrics(np.zeros(5), np.zeros(5)) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert np.isnan(auroc(np.arange(4.0), np.zeros(4)))  # no positives: undefined
    assert auroc(np.array([0.1, 0.9, 0.5, 0.5]), np.array([0, 1, 0, 1])) == pytest.approx(0.875)  # by hand


def test_threshold_maximizes_validation_f1_and_prefers_fewer_flags():
    from sklearn.metrics import f1_score

    for seed in range(4):
        scores, labels = fixed_arrays(seed)
        threshold = best_threshold(scores, labels)
        f1 = {u: f1_score(labels, scores >= u, zero_division=0) for u in np.unique(scores)}
        best = max(f1.values())
        assert f1[threshold] == pytest.approx(best, abs=1e-15)
        assert threshold == max(u for u, v in f1.items() if v == best)  # ties: the highest threshold
    # by hand: scores 1, 2, 3, 4 with labels 0, 1, 0, 1: F1 at 4 is 2/3, at 2 is 0.8 (flags 2, 3, 4), at 1 is 0.8
    assert best_threshold(np.array([1.0, 2, 3, 4]), np.array([0, 1, 0, 1])) == 2.0
    # no labelled step: nothing on these scores is flagged
    scores = np.array([0.3, 2.5, 1.0])
    for labels in (None, np.zeros(3, int)):
        threshold = best_threshold(scores, labels)
        assert threshold > 2.5
        assert not np.any(scores >= threshold)
        assert np.nextafter(2.5, 3) == threshold


def test_scores_and_the_rolling_z_baseline_match_pandas():
    x = np.random.default_rng(3).normal(size=200).cumsum()
    for k in (1, 5):
        expected = np.sqrt(pd.Series(x**2).rolling(k, min_periods=1).mean().to_numpy())
        np.testing.assert_allclose(trailing_rms(x, k), expected, rtol=1e-12)
    w = 16
    past = pd.Series(x).shift(1).rolling(w)  # the w values before t
    expected = (x - past.mean().to_numpy()) / past.std(ddof=0).to_numpy()
    got = rolling_zscores(x, w)
    assert np.isnan(got[:w]).all()
    np.testing.assert_allclose(got[w:], expected[w:], rtol=1e-7)  # pandas' rolling moments are online sums
    by_loop = [(x[t] - x[t - w : t].mean()) / x[t - w : t].std() for t in range(w, len(x))]
    np.testing.assert_allclose(got[w:], by_loop, rtol=1e-13)
    assert rolling_zscores(np.ones(30), 8)[8:].tolist() == [0.0] * 22  # flat: no deviation


# ---------------------------------------------------------------------------------------------------- data
def test_the_shipped_mitdb_record_and_its_split():
    assert hashlib.sha256(MITDB_CSV.read_bytes()).hexdigest().startswith("d4f2539a5e85e1ac")
    series = load_mitdb()
    assert len(series.values) == 7500
    assert series.labels.sum() == 352
    assert runs_of(series.labels) == [(6936, 7288)]  # one event: one anomalous beat
    counts = split_events(series.labels, split_bounds(7500, 0.15, 0.15))
    assert counts == {
        "train": {"steps": 5250, "labelled_steps": 0, "events": 0},
        "val": {"steps": 1125, "labelled_steps": 0, "events": 0},
        "test": {"steps": 1125, "labelled_steps": 352, "events": 1},
    }
    # an event cut by a boundary counts in both splits
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 0, 1, 1])
    assert split_events(labels, {"a": (0, 2), "b": (2, 10)})["b"] == {"steps": 8, "labelled_steps": 5, "events": 3}


def test_injected_anomalies_are_deterministic_and_as_documented():
    clean = load_seattle_temps()
    assert len(clean) == 8759
    v, labels, events = inject_anomalies(clean, 40, seed=0)
    v2, labels2, events2 = inject_anomalies(clean, 40, seed=0)
    np.testing.assert_array_equal(v, v2)
    assert events == events2
    assert np.array_equal(labels, labels2)
    other, _, _ = inject_anomalies(clean, 40, seed=1)
    assert not np.array_equal(v, other)
    s = clean.std()
    assert {e["kind"] for e in events} == set(KINDS)
    assert [(e["start"], e["start"] + e["length"]) for e in events] == runs_of(labels)  # events never touch
    assert labels.sum() == sum(e["length"] for e in events)
    np.testing.assert_array_equal(v[labels == 0], clean[labels == 0])  # nothing changes outside the events
    for e in events:
        delta = v[e["start"] : e["start"] + e["length"]] - clean[e["start"] : e["start"] + e["length"]]
        if e["kind"] == "spike":
            assert e["length"] == 1
            assert 4 * s <= abs(delta[0]) <= 6 * s
        elif e["kind"] == "level_shift":
            assert 12 <= e["length"] <= 48
            assert np.ptp(delta) < 1e-9 * s
            assert 2 * s <= abs(delta[0]) <= 3 * s
        else:
            assert 12 <= e["length"] <= 48
            assert np.ptp(delta) > 0
    counts = split_events(labels, split_bounds(len(v), 0.15, 0.15))
    assert counts["val"]["events"] >= 5
    assert counts["test"]["events"] >= 5
    with pytest.raises(DataError, match=r"data\.num_anomalies=1000"):
        inject_anomalies(clean, 1000, seed=0)


def test_training_windows_hold_no_labelled_step_and_evaluation_scores_every_step(compose):
    labels = np.zeros(40, np.int8)
    labels[[12, 30]] = 1
    ends = training_ends(labels, 36, window=4, stride=1)
    for e in ends:
        assert not labels[e - 4 : e + 1].any()  # inputs e-4 .. e-1 and targets up to e
    assert set(range(4, 36)) - set(ends.tolist()) == {12, 13, 14, 15, 16, 30, 31, 32, 33, 34}
    dm = build_anomaly(compose(*SMALL, "data=anomaly_injected").data, seed=0, cache_dir=None, batch_size=8)
    dm.setup("fit")
    for split in ("val", "test"):
        start, stop = dm.bounds[split]
        ds = dm.splits[split]
        assert ds.ends.tolist() == list(range(start, stop))
        x, y, t = ds.collate([0, len(ds) - 1])
        assert x.shape == y.shape == (2, 16, 1)
        np.testing.assert_allclose(x[:, 1:].numpy(), y[:, :-1].numpy())  # the targets are the next values
        np.testing.assert_allclose(y[:, -1, 0].numpy(), dm.z[t.numpy()].astype(np.float32))
    train_ds = dm.splits["train"]
    assert all(not dm.labels[e - 16 : e + 1].any() for e in train_ds.ends.tolist())
    normal = dm.values[: dm.bounds["train"][1]][dm.labels[: dm.bounds["train"][1]] == 0]
    assert (dm.mean, dm.std) == pytest.approx((normal.mean(), normal.std()), rel=1e-12)


# -------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("content", "overrides", "fragment"),
    [
        (None, ("data.value_column=v",), "file not found"),
        ("v,y\n1,0\n2,0\n", ("data.value_column=value",), "data.value_column=value: no such column"),
        ("v,y\n1,0\n2,0\n", ("data.value_column=v", "data.label_column=lab"), "data.label_column=lab: no such column"),
        ("v,y\n1,0\n2,2\n", ("data.value_column=v", "data.label_column=y"), "row 2 of"),
        ("v,y\n1,0\nabc,0\n", ("data.value_column=v",), "data.value_column=v: row 2 of"),
    ],
)
def test_bad_csv_is_one_line_naming_the_file_or_key(compose, tmp_path, content, overrides, fragment):
    path = tmp_path / "series.csv"
    if content is not None:
        path.write_text(content)
    cfg = compose(*SMALL, "data=anomaly_csv", f"data.path={path}", *overrides)
    with pytest.raises(DataError) as err:
        build_anomaly(cfg.data, seed=0, cache_dir=None, batch_size=8).setup("fit")
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message
    assert str(path) in message or "data.path" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [("model.bidirectional=true", "model.bidirectional"), ("task.score_window=0", "task.score_window"),
     ("task.baseline_windows=[]", "task.baseline_windows"), ("data.window=0", "data.window"),
     ("data=anomaly_csv", "data.path"), ("data.val_fraction=0.9", "data.val_fraction")],
)  # fmt: skip
def test_bad_values_are_one_line_config_errors(compose, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose(*SMALL, override))


def test_the_task_defaults_to_mitdb_and_takes_only_anomaly_data(compose):
    assert compose("task=anomaly").data.name == "mitdb"
    assert compose("task=anomaly", "data=anomaly_injected").data.name == "anomaly_injected"
    with pytest.raises(ConfigError):
        validate(compose("task=forecast", "data=mitdb"))


# --------------------------------------------------------------------------------------------- training
def detector_state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["anomaly_detector"]


@pytest.mark.compose
def test_both_backends_agree_in_float64_and_log_the_metrics_and_the_picture(compose, tmp_path, monkeypatch):
    common = (*SMALL, "data=anomaly_injected", "data.num_anomalies=20", "optimizer=adam", "optimizer.lr=0.01",
              "trainer.precision=64", "trainer.max_steps=12", "trainer.max_epochs=null",
              "trainer.val_check_interval=6", "trainer.check_val_every_n_epoch=null", "seed=3")  # fmt: skip
    losses, tasks = {}, {}
    for b in ("torch", "numpy"):
        losses[b], tasks[b] = run_recording(compose, (*common, f"model.backend={b}"), tmp_path / b, monkeypatch)
    assert len(losses["numpy"]) == 12
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-8, atol=0)
    a, b = (detector_state(tmp_path / k / "checkpoints" / "last.ckpt") for k in ("torch", "numpy"))
    assert a["baseline_window"] == b["baseline_window"]
    assert a["threshold"] == pytest.approx(b["threshold"], rel=1e-8)
    metrics = pd.read_csv(tmp_path / "numpy" / "csv" / "metrics.csv")
    for stage in ("val", "test"):
        for name in ("loss", "precision", "recall", "f1", "auroc", "threshold", "baseline_f1", "baseline_auroc"):
            values = metrics[f"{stage}/{name}"].dropna()
            assert len(values), (stage, name)
            assert np.isfinite(values).all(), (stage, name)
        assert len(list((tmp_path / "numpy" / "figures" / f"{stage}_anomaly").glob("step_*.png"))) == (
            2 if stage == "val" else 1
        )


@pytest.mark.compose
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_resume_equals_uninterrupted(compose, tmp_path, backend):
    settings = (*SMALL, "data=mitdb", f"model.backend={backend}", "trainer.precision=64", "trainer.max_steps=8",
                "trainer.max_epochs=null", "trainer.val_check_interval=4", "trainer.check_val_every_n_epoch=null",
                "trainer.limit_val_batches=6", "run_test=false", "seed=2")  # fmt: skip
    train(compose(*settings, run_dir=tmp_path / "whole"))
    train(compose(*settings[:-5], "trainer.max_steps=4", *settings[-4:], run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose(*settings, f"ckpt_path={last}", run_dir=tmp_path / "resumed"))
    whole, resumed, first = (
        torch.load(tmp_path / r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        for r in ("whole", "resumed", "first")
    )
    key = "numpy_backend" if backend == "numpy" else "state_dict"
    mine = resumed[key]["params"] if backend == "numpy" else resumed[key]
    theirs = whole[key]["params"] if backend == "numpy" else whole[key]
    for name, value in theirs.items():
        torch.testing.assert_close(mine[name], value, rtol=0, atol=0)
    assert resumed["anomaly_detector"] == whole["anomaly_detector"]
    assert first["anomaly_detector"] != whole["anomaly_detector"]  # the check has teeth: a later threshold differs
    a = pd.read_csv(tmp_path / "resumed" / "csv" / "metrics.csv")
    b = pd.read_csv(tmp_path / "whole" / "csv" / "metrics.csv")
    assert a["val/loss"].dropna().iloc[-1] == b["val/loss"].dropna().iloc[-1]


@pytest.mark.compose
def test_a_reloaded_model_scores_a_raw_series_as_validation_did(compose, tmp_path, recorder):
    """score_series on the record: the validation steps' largest score is what the threshold was set just above
    (data=mitdb has no labelled validation step), and no validation step is flagged; the test event is scored."""
    train(compose(*SMALL, "data=mitdb", "model.backend=numpy", "trainer.precision=64", "trainer.max_steps=6",
                  "trainer.max_epochs=null", "trainer.val_check_interval=6", "trainer.check_val_every_n_epoch=null",
                  run_dir=tmp_path))  # fmt: skip
    model = AnomalyTask.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    dm = recorder.runs[-1].datamodule
    out = model.score_series(dm.values)
    assert out["score"].shape == out["flag"].shape == (7500,)
    assert np.isnan(out["score"][:16]).all()
    assert np.isfinite(out["score"][16:]).all()
    start, stop = dm.bounds["val"]
    assert np.nextafter(out["score"][start:stop].max(), np.inf) == pytest.approx(model.detector["threshold"], rel=1e-9)
    assert not out["flag"][start:stop].any()
    test_metrics = recorder.runs[-1].test_metrics  # logged in float32
    assert test_metrics["test/auroc"] == pytest.approx(auroc(out["score"][-1125:], dm.labels[-1125:]), rel=1e-6)
    assert "val/f1" not in recorder.runs[-1].metrics  # no labelled validation step: nothing to measure there
    # rnnlab-predict on the record's own CSV (its columns data, label): every step's score and flag as score_series
    # gives them, the labels passed through; a CSV under another column name is read from its one numeric column
    from rnnlab.data.anomaly import MITDB_CSV
    from rnnlab.predict import predict, render_csv

    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    records, form = predict({"ckpt_path": ckpt, "input": str(MITDB_CSV), "format": None, "device": "cpu"})
    assert form == "csv"
    assert [r["row"] for r in records] == list(range(7500))
    assert [r["label"] for r in records] == dm.labels.tolist()
    scores = np.array([np.nan if r["score"] is None else r["score"] for r in records])
    np.testing.assert_array_equal(scores, out["score"])
    assert [r["flag"] for r in records] == out["flag"].astype(int).tolist()
    assert render_csv(records).splitlines()[0] == "row,data,score,flag,label"
    other = tmp_path / "other.csv"
    pd.DataFrame({"mv": dm.values[:40]}).to_csv(other, index=False)
    again, _ = predict({"ckpt_path": ckpt, "input": str(other), "format": "jsonl", "device": "cpu"})
    assert [r["score"] for r in again[16:]] == pytest.approx(out["score"][16:40].tolist(), rel=1e-12)
    assert all(r["score"] is None for r in again[:16])
    from rnnlab.tasks.inputs import InputError

    with pytest.raises(InputError, match="needs more than 16"):
        predict({"ckpt_path": ckpt, "input": str(_short(tmp_path, dm.values[:10])), "format": None, "device": "cpu"})


def _short(tmp_path, values) -> object:
    path = tmp_path / "short.csv"
    pd.DataFrame({"data": values}).to_csv(path, index=False)
    return path


@pytest.mark.compose
@pytest.mark.parametrize("labelled", [True, False])
def test_a_users_csv_with_and_without_labels(compose, tmp_path, recorder, labelled):
    x = np.sin(np.arange(600) / 5.0)
    y = np.zeros(600, int)
    for at in (400, 440, 520, 560):  # val: steps 360 .. 479, test: 480 .. 599
        x[at] += 4.0
        y[at] = 1
    path = tmp_path / "mine.csv"
    pd.DataFrame({"reading": x, "is_bad": y}).to_csv(path, index=False)
    label = ("data.label_column=is_bad",) if labelled else ()
    train(compose(*SMALL, "data=anomaly_csv", f"data.path={path}", "data.value_column=reading", *label,
                  "data.val_fraction=0.2", "data.test_fraction=0.2", "trainer.max_steps=4", "trainer.max_epochs=null",
                  run_dir=tmp_path / "run"))  # fmt: skip
    run = recorder.runs[-1]
    assert run.datamodule.event_counts["val"]["events"] == (2 if labelled else 0)
    assert run.datamodule.event_counts["test"]["events"] == (2 if labelled else 0)
    assert np.isfinite(run.test_metrics["test/loss"])
    assert ("test/f1" in run.test_metrics) == labelled == ("test/baseline_auroc" in run.test_metrics)
