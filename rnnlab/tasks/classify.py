"""task=classify: sequence -> class from the final hidden state (both directions when bidirectional)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryROC,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from rnnlab.tasks.base import RecurrentTask
from rnnlab.tasks.objectives import CrossEntropy


class ClassifyTask(RecurrentTask):
    """Cross-entropy of the class logits from the final hidden state. Logs train/loss, train/acc and, per epoch,
    {val,test}/loss, {val,test}/acc, {val,test}/f1 (macro) and, for two classes, {val,test}/auroc (ROC AUC of the
    class-1 probability). After every validation a confusion-matrix image (``val/confusion_matrix``; rows: true
    class, columns: predicted) goes to TensorBoard and the run's figures and, for two classes, beside it the ROC
    curve of the class-1 probability with its area (``val/roc``). More classes get no ROC picture."""

    head = "final"
    objective = CrossEntropy()
    predict_input = "lines"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        c = self.spec.num_outputs
        self.metrics = torch.nn.ModuleDict(
            {
                f"{stage}_{name}": metric(num_classes=c, average=avg)
                for stage in ("val", "test")
                for name, metric, avg in (("acc", MulticlassAccuracy, "micro"), ("f1", MulticlassF1Score, "macro"))
            }
        )
        if c == 2:
            self.metrics.update({f"{stage}_auroc": BinaryAUROC() for stage in ("val", "test")})
        self.roc = BinaryROC() if c == 2 else None  # every validation probability (thresholds=None): the exact curve
        self.confusion = MulticlassConfusionMatrix(num_classes=c)

    def validation_metrics(self, datamodule: Any) -> set[str]:
        return {"loss", "acc", "f1"} | ({"auroc"} if self.spec.num_outputs == 2 else set())

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] (a torch tensor for either backend)."""
        return self.predict((x, lengths))[0]

    def training_metrics(self, batch: Any, loss: torch.Tensor, logits: torch.Tensor | None) -> dict[str, Any]:
        return {"acc": (logits.argmax(-1) == batch[2]).float().mean()}

    def predict_records(self, lines: list[str]) -> list[dict[str, Any]]:
        """rnnlab-predict: per text line, the most probable class and every class's probability (the softmax of
        the logits, in float64), the classes named as the data names them."""
        from rnnlab.tasks.inputs import chunks, padded, predict_info, read_lines

        info = predict_info(self)
        names = list(info.get("labels") or [str(i) for i in range(self.spec.num_outputs)])
        records = []
        for chunk in chunks(read_lines(lines, info, self.vocab.stoi)):
            with torch.no_grad():
                logits = self(*padded(chunk, self.spec.padding_idx or 0, self.device))
            probs = torch.softmax(logits.double(), dim=-1).cpu().tolist()
            for line, p in zip(chunk, probs, strict=True):
                best = max(range(len(p)), key=p.__getitem__)
                records.append({"line": line.number, "text": line.text, "label": names[best],
                                "p": dict(zip(names, p, strict=True))})  # fmt: skip
        return records

    def _evaluate(self, batch: Any, stage: str) -> None:
        x, lengths, y = batch
        logits = self(x, lengths)
        loss = self.objective.torch(logits, y)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(y), sync_dist=True)
        for name in ("acc", "f1"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(logits, y)
            self.log(f"{stage}/{name}", metric, on_epoch=True, prog_bar=name == "acc" and stage == "val")
        if f"{stage}_auroc" in self.metrics:
            auroc = self.metrics[f"{stage}_auroc"]
            auroc.update(torch.softmax(logits.double(), dim=-1)[:, 1], y)
            self.log(f"{stage}/auroc", auroc, on_epoch=True)
        if stage == "val":
            self.confusion.update(logits.argmax(-1), y)
            if self.roc is not None:
                self.roc.update(torch.softmax(logits.double(), dim=-1)[:, 1], y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        matrix = self.confusion.compute().cpu().numpy()
        self.confusion.reset()
        curve = None
        if self.roc is not None:
            curve = roc_points(self.roc)
            self.roc.reset()
        if self.trainer is not None and not self.trainer.sanity_checking:
            from rnnlab.plots import log_figure

            names = getattr(self.trainer.datamodule, "class_names", None) or [str(i) for i in range(len(matrix))]
            log_figure(self, "val/confusion_matrix", plot_confusion(matrix, names, f"step {self.global_step}"))
            if curve is not None:
                log_figure(self, "val/roc", plot_roc(*curve, names, f"step {self.global_step}"))


def roc_points(roc: Any) -> tuple[Any, Any, float]:
    """(false-positive rates, true-positive rates, area under the curve) of a BinaryROC that saw every score: one
    point per distinct score from (0, 0) to (1, 1) (torchmetrics divides the counts in float32, as for val/auroc);
    the area by the trapezoid rule, which equals the Mann-Whitney statistic, ties counting one half."""
    import numpy as np

    fpr, tpr, _ = roc.compute()
    fpr, tpr = fpr.double().cpu().numpy(), tpr.double().cpu().numpy()
    return fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def plot_roc(fpr: Any, tpr: Any, auroc: float, names: list[str], title: str) -> Any:
    """The ROC curve of the class-1 (``names[1]``) probability, with the chance diagonal and the AUROC."""
    from rnnlab.plots import new_figure

    fig = new_figure(4.6, 4.3)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance (0.5)")
    ax.plot(fpr, tpr, color="C0", linewidth=1.8, label=f"AUROC = {auroc:.4f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel(f"false-positive rate (true {names[0]} called {names[1]})")
    ax.set_ylabel(f"true-positive rate ({names[1]} found)")
    ax.set_title(f"ROC, class {names[1]}, {title}")
    ax.legend(loc="lower right")
    return fig


def plot_confusion(matrix: Any, names: list[str], title: str) -> Any:
    """Counts with the row-normalised share as colour; rows are the true classes, columns the predictions."""
    import numpy as np

    from rnnlab.plots import new_figure

    counts = np.asarray(matrix)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(names)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=9)  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix, {title}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return fig
