"""The ROC picture of two-class classification (``val/roc`` beside ``val/confusion_matrix``): its points and area
against scikit-learn's roc_curve and roc_auc_score on the same probabilities, in a run on each backend, and no such
picture for more classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

import rnnlab.tasks.classify as classify
from rnnlab.tasks.classify import ClassifyTask, plot_roc, roc_points
from rnnlab.train import train

pytestmark = pytest.mark.compose

SPEC = {"cell": "gru", "vocab_size": 5, "embed_dim": 2, "hidden_size": 3, "num_layers": 1, "bidirectional": False,
        "num_outputs": 2, "padding_idx": 0}  # fmt: skip
RUN = ("task=classify", "data=synthetic_text", "data.num_samples=400", "data.batch_size=16", "model=gru",
       "model.hidden_size=6", "model.embed_dim=4", "trainer.precision=64", "trainer.max_steps=4",
       "trainer.max_epochs=null", "trainer.val_check_interval=4", "trainer.limit_test_batches=1")  # fmt: skip


def sklearn_curve(y: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    fpr, tpr, _ = roc_curve(y, p1, drop_intermediate=False)  # one point per distinct score, as the task's
    return fpr, tpr, roc_auc_score(y, p1)


@pytest.mark.unit
def test_roc_points_and_area_match_sklearn(monkeypatch):
    """Scores with ties, fed in three batches through the task's evaluation step as a validation would."""
    task = ClassifyTask(spec=SPEC, optimizer={"name": "adam", "lr": 1e-3}, task={"name": "classify"},
                        vocab=["<pad>", "<unk>", "a", "b", "c"], seed=0)  # fmt: skip
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 90)
    p1 = np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0.01, 0.99), 2)  # rounded: many tied scores
    for lo in range(0, 90, 30):
        logits = torch.stack(
            [torch.zeros(30, dtype=torch.float64), torch.tensor(np.log(p1 / (1 - p1))[lo : lo + 30])], 1
        )
        monkeypatch.setattr(task, "forward", lambda x, lengths, logits=logits: logits)
        with pytest.warns(UserWarning, match="self.log"):  # no trainer: the metrics accumulate, nothing is logged
            task._evaluate((torch.ones(30, 2, dtype=torch.long), torch.full((30,), 2), torch.tensor(y[lo:lo + 30])),
                           "val")  # fmt: skip
    fpr, tpr, area = roc_points(task.roc)
    want_fpr, want_tpr, want_area = sklearn_curve(y, p1)
    assert len(fpr) == len(want_fpr) == len(np.unique(p1)) + 1 < 90  # the ties share a point
    np.testing.assert_allclose(fpr, want_fpr, rtol=0, atol=1e-7)  # torchmetrics divides in float32
    np.testing.assert_allclose(tpr, want_tpr, rtol=0, atol=1e-7)
    assert area == pytest.approx(want_area, abs=1e-7)
    assert area == pytest.approx(task.metrics["val_auroc"].compute().item(), abs=1e-6)  # the logged val/auroc
    assert 0.6 < area < 0.95


@pytest.mark.unit
def test_roc_figure_draws_the_points_and_the_area():
    fpr, tpr = np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0, 1.0])
    fig = plot_roc(fpr, tpr, 0.875, ["negative", "positive"], "step 3")
    ax = fig.axes[0]
    _chance, curve = ax.get_lines()
    np.testing.assert_array_equal(curve.get_xdata(), fpr)
    np.testing.assert_array_equal(curve.get_ydata(), tpr)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance (0.5)", "AUROC = 0.8750"]
    assert "positive" in ax.get_title()


@pytest.mark.filterwarnings("ignore:The state dict in:UserWarning")  # a NumPy checkpoint has no torch parameters
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_two_class_run_logs_the_roc_of_its_validation(compose, recorder, monkeypatch, tmp_path, backend):
    """One validation at step 4 with the final weights: the curve drawn is sklearn's on the probabilities that
    last.ckpt's model gives the validation split, and it is in the event file and the figures directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    drawn = []
    monkeypatch.setattr(classify, "plot_roc", lambda *args: drawn.append(args) or plot_roc(*args))
    train(compose(*RUN, f"model.backend={backend}", run_dir=tmp_path / "run"))
    assert len(drawn) == 1
    fpr, tpr, area, names, _ = drawn[0]
    task = ClassifyTask.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu")
    task.eval()
    scores, labels = [], []
    with torch.no_grad():
        for x, lengths, y in recorder.runs[0].datamodule.val_dataloader():
            scores.append(torch.softmax(task(x, lengths).double(), -1)[:, 1])
            labels.append(y)
    want_fpr, want_tpr, want_area = sklearn_curve(torch.cat(labels).numpy(), torch.cat(scores).numpy())
    np.testing.assert_allclose(fpr, want_fpr, rtol=0, atol=1e-7)
    np.testing.assert_allclose(tpr, want_tpr, rtol=0, atol=1e-7)
    assert area == pytest.approx(want_area, abs=1e-7)
    assert len(names) == 2
    (png,) = (tmp_path / "run" / "figures" / "val_roc").glob("step_*.png")
    assert png.name == "step_0000004.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"val/roc", "val/confusion_matrix"} <= set(events.Tags()["images"])
    assert [image.step for image in events.Images("val/roc")] == [4]


def test_no_roc_for_three_classes(compose, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(compose(*RUN, "data.num_classes=3", run_dir=tmp_path / "run"))
    figures = {p.name for p in (tmp_path / "run" / "figures").iterdir()}
    assert figures == {"val_confusion_matrix"}
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "val/confusion_matrix" in events.Tags()["images"]
    assert "val/roc" not in events.Tags()["images"]
