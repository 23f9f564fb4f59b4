"""task=classify: sequence -> class from the final hidden state (both directions when bidirectional)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from rnnlab.tasks.base import RecurrentTask


class ClassifyTask(RecurrentTask):
    """Logs train/loss, train/acc and, per epoch, {val,test}/loss, {val,test}/acc, {val,test}/f1 (macro)."""

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

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.is_numpy:
            _, final, _ = self.net.forward(x.cpu().numpy(), lengths.cpu().numpy(), train=False)
            logits, _ = self.net.head_forward(self.net.last_hidden(final))
            return torch.from_numpy(logits)
        _, final = self.net(x, lengths)
        return self.net.head(self.net.last_hidden(final))

    def numpy_loss_and_backward(self, batch: Any, scale: float = 1.0) -> tuple[float, Any]:
        from rnnlab.models.numpy.losses import cross_entropy

        x, lengths, y = (t.cpu().numpy() for t in batch)
        net = self.net
        _, final, cache = net.forward(x, lengths, train=True)
        logits, head_cache = net.head_forward(net.last_hidden(final))
        loss, dlogits = cross_entropy(logits, y)
        if scale != 1.0:
            dlogits *= scale
        d_features = net.head_backward(dlogits, head_cache)
        net.backward(None, net.last_hidden_backward(d_features), cache)
        return loss, torch.from_numpy(logits)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, lengths, y = batch
        if self.is_numpy:
            loss, logits = self.numpy_training_step(batch, batch_idx)
        else:
            logits = self(x, lengths)
            loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        self.log("train/acc", acc, batch_size=len(y))
        return loss

    def _evaluate(self, batch: Any, stage: str) -> None:
        x, lengths, y = batch
        logits = self(x, lengths)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(y), sync_dist=True)
        for name in ("acc", "f1"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(logits, y)
            self.log(f"{stage}/{name}", metric, on_epoch=True, prog_bar=name == "acc" and stage == "val")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")
