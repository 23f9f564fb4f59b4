"""task=tag: one label per token (sequence labelling), from the recurrent outputs at every step (both directions
when bidirectional, the default for this task)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from rnnlab.tasks.base import RecurrentTask

IGNORE = -100


class TagTask(RecurrentTask):
    """Cross-entropy over the labelled tokens (label -100 is ignored: padding, unscored steps). Logs train/loss,
    train/acc and, per evaluation, {val,test}/loss and /acc (token accuracy over the labelled tokens); for BIO
    labels (data=ner_synth) also /entity_f1, /entity_precision and /entity_recall over exact-match spans
    (conlleval's reading of BIO)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._eval: dict[str, dict[str, Any]] = {}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, C] (a torch tensor for either backend); steps past a sequence's length are zero-input."""
        if self.is_numpy:
            out, _, _ = self.net.forward(x.cpu().numpy(), lengths.cpu().numpy(), train=False)
            b, t, f = out.shape
            logits, _ = self.net.head_forward(out.reshape(b * t, f))
            return torch.from_numpy(logits.reshape(b, t, -1))
        out, _ = self.net(x, lengths)
        return self.net.head(out)

    def numpy_loss_and_backward(self, batch: Any, scale: float = 1.0) -> tuple[float, Any]:
        from rnnlab.models.numpy.losses import cross_entropy

        x, lengths, y = (t.cpu().numpy() for t in batch)
        net = self.net
        out, _, cache = net.forward(x, lengths, train=True)
        b, t, f = out.shape
        logits, head_cache = net.head_forward(out.reshape(b * t, f))
        loss, dlogits = cross_entropy(logits, y.reshape(-1), ignore_index=IGNORE)
        if scale != 1.0:
            dlogits *= scale
        net.backward(net.head_backward(dlogits, head_cache).reshape(b, t, f), None, cache)
        return loss, torch.from_numpy(logits.reshape(b, t, -1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, lengths, y = batch
        if self.is_numpy:
            loss, logits = self.numpy_training_step(batch, batch_idx)
        else:
            logits = self(x, lengths)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)
        mask = y != IGNORE
        acc = (logits.argmax(-1) == y)[mask].float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        self.log("train/acc", acc, batch_size=len(y))
        return loss

    # ------------------------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch: Any, stage: str) -> None:
        x, lengths, y = batch
        logits = self(x, lengths)
        acc = self._eval.setdefault(stage, {"nll": 0.0, "correct": 0, "count": 0, "true": [], "pred": []})
        mask = y != IGNORE
        acc["nll"] += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), y.reshape(-1),
                                            ignore_index=IGNORE, reduction="sum"))  # fmt: skip
        pred = logits.argmax(-1)
        acc["correct"] += int((pred == y)[mask].sum())
        acc["count"] += int(mask.sum())
        names = self._label_names()
        if names is not None:
            for row_y, row_p, n in zip(y.tolist(), pred.tolist(), lengths.tolist(), strict=True):
                acc["true"].append([names[i] for i in row_y[:n]])
                acc["pred"].append([names[i] for i in row_p[:n]])

    def _label_names(self) -> list[str] | None:
        """BIO label names of the data module (entity scores are computed only for BIO labels)."""
        names = getattr(getattr(self.trainer, "datamodule", None), "label_names", None) if self._trainer else None
        return names if names and any(n.startswith("B-") for n in names) else None

    def _log_split(self, stage: str) -> None:
        from rnnlab.data.tagging import entity_scores

        acc = self._eval.pop(stage, None)
        if not acc or not acc["count"]:
            return
        self.log(f"{stage}/loss", acc["nll"] / acc["count"], prog_bar=stage == "val")
        self.log(f"{stage}/acc", acc["correct"] / acc["count"], prog_bar=stage == "val")
        if acc["true"]:
            precision, recall, f1 = entity_scores(acc["true"], acc["pred"])
            self.log(f"{stage}/entity_f1", f1, prog_bar=stage == "val")
            self.log(f"{stage}/entity_precision", precision)
            self.log(f"{stage}/entity_recall", recall)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")
